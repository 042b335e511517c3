//! SIP messages of numbered calls, for the routing and cold benches.

/// A message (the INVITE, the 180) of call `i`: `i` as 8 digits in front of the
/// original Call-ID, written in place (the same few stores at any table size), in
/// one of a few buffers (a batch's datagrams are all alive at once).
pub struct CallMsgs {
    pub msgs: Vec<Vec<u8>>,
    at: usize,
}

impl CallMsgs {
    /// `buffers` copies of `template` (a message with a `Call-ID: ` header).
    pub fn of_template(template: &[u8], buffers: usize) -> Self {
        let text = String::from_utf8_lossy(template).into_owned();
        let (head, tail) = text.split_once("Call-ID: ").expect("a Call-ID");
        let msg = format!("{head}Call-ID: 00000000-{tail}").into_bytes();
        CallMsgs {
            at: head.len() + "Call-ID: ".len(),
            msgs: vec![msg; buffers],
        }
    }

    /// Buffer `k` made call `i`'s message.
    pub fn set(&mut self, k: usize, mut i: u32) {
        for d in self.msgs[k][self.at..self.at + 8].iter_mut().rev() {
            *d = b'0' + (i % 10) as u8;
            i /= 10;
        }
    }

    /// The first buffer, made call `i`'s message.
    pub fn of(&mut self, i: u32) -> &[u8] {
        self.set(0, i);
        &self.msgs[0]
    }
}
