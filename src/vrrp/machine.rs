//! The RFC 5798 §6.4 state machine of one virtual router, sans-IO.
//!
//! The shell feeds in validated advertisements ([`check_advert`](super::check_advert)
//! does the §7.1 checks), startup/shutdown, priority changes and timeouts; it drains
//! advertisements to send ([`Machine::poll_transmit`], emitted with
//! [`Repr::emit`](super::Repr::emit) to 224.0.0.18 or the unicast peers) and events
//! ([`Machine::poll_event`]). Drain transmits before acting on [`Event::SendGarp`]:
//! a new master's first advertisement makes the old one drop the VIPs before the
//! gratuitous ARP moves them (keepalived orders them the same way).
//!
//! # Timers
//!
//! All intervals are whole centiseconds, computed with integer arithmetic as RFC 5798
//! §6.1 writes them, and only then turned into a [`Duration`]:
//!
//! - `Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256`, truncated;
//! - `Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time`.
//!
//! keepalived keeps the fraction (it computes the skew in microseconds), so its
//! Master_Down_Interval can be up to 9.99 ms longer than ours for the same settings.
//! With a 30 ms interval the truncation makes Skew_Time 0 cs for priorities above 170.
//!
//! # Beyond RFC 5798, as keepalived does it
//!
//! - A master hearing a lower priority advertisement (another master: a healed split
//!   brain) sends an advertisement at once and asks for gratuitous ARP
//!   ([`Event::OtherMasterSeen`], [`Event::SendGarp`]); RFC 5798 only discards it. Such
//!   an immediate answer (and the one to a priority 0 advert) goes out at most once per
//!   Advertisement_Interval: adverts are unauthenticated, so anyone on the segment
//!   could otherwise make the master send an advert and a GARP burst per packet. A reply
//!   restarts the Adver_Timer like any advert, so at most two adverts go out per
//!   interval and never less than one.
//! - `preempt_delay`: after startup, or after first hearing a lower priority master, a
//!   backup keeps accepting that master's adverts for the delay; afterwards it discards
//!   them and takes over when its Master_Down_Timer runs out.
//! - The address owner (priority 255) processes adverts too (RFC 5798 §7.1 says it
//!   discards them), so it still reasserts itself after a split.
//! - Effective priority of a non-owner stays in 1..=254.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::packet::{MAX_ADDRS, MAX_ADVERT_INT_CS, Repr};

// `vrrp.vips` is refused beyond this when the config is checked.
const _: () = assert!(MAX_ADDRS == crate::config::MAX_VIPS);

/// Priority of the address owner.
pub const PRIORITY_OWNER: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Base priority, 1..=255 (255: address owner).
    pub priority: u8,
    /// Advertisement_Interval; centisecond granularity, 10 ms..=40.95 s.
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Our own address on the interface: the source of our adverts, and the tie-break
    /// between equal priorities (the higher address wins).
    pub primary_ip: Ipv4Addr,
    /// RFC 5798 Accept_Mode; the shell uses it to decide whether a non-owner master
    /// accepts packets for the VIPs. The machine does not.
    pub accept_mode: bool,
    pub vips: Vec<Ipv4Addr>,
}

/// Why [`Settings`] cannot run. `as_str` values are metric labels / config errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("vrid must be 1..=255")]
    Vrid,
    #[error("priority must be 1..=255")]
    Priority,
    #[error("advert_interval must be a whole number of centiseconds in 10ms..=40.95s")]
    AdvertInterval,
    #[error("at most 255 virtual addresses fit in an advertisement")]
    TooManyVips,
}

impl Settings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let ms = self.advert_interval.as_millis();
        if self.vrid == 0 {
            Err(SettingsError::Vrid)
        } else if self.priority == 0 {
            Err(SettingsError::Priority)
        } else if !(10..=40_950).contains(&ms)
            || self.advert_interval != Duration::from_millis(ms as u64)
            || ms % 10 != 0
        {
            Err(SettingsError::AdvertInterval)
        } else if self.vips.len() > MAX_ADDRS {
            Err(SettingsError::TooManyVips)
        } else {
            Ok(())
        }
    }

    /// Advertisement_Interval in centiseconds: rounded to the nearest centisecond and
    /// clamped to 1..=4095 (what [`Settings::validate`] rejects is still usable).
    pub fn advert_interval_cs(&self) -> u16 {
        let cs = (self.advert_interval.as_millis() + 5) / 10;
        cs.clamp(1, u128::from(MAX_ADVERT_INT_CS)) as u16
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        }
    }
}

/// Why a transition happened. `as_str` values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Startup of a non-owner: Backup first.
    Startup,
    /// Startup of the address owner (priority 255): Master at once.
    StartupOwner,
    /// Master_Down_Timer expired: the master went silent.
    MasterDown,
    /// Master_Down_Timer expired while we discarded a lower priority master's adverts.
    Preempt,
    /// Master_Down_Timer (set to Skew_Time by a priority 0 advert) expired.
    PriorityZero,
    /// A master heard a higher priority master.
    HigherPrioritySeen,
    /// A master heard another master of equal priority with a higher address: two
    /// masters at once (a split, or simultaneous startup); the lower address yields.
    SplitBrain,
    /// Shutdown input.
    Shutdown,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Startup => "startup",
            Cause::StartupOwner => "startup_owner",
            Cause::MasterDown => "master_down",
            Cause::Preempt => "preempt",
            Cause::PriorityZero => "priority_zero",
            Cause::HigherPrioritySeen => "higher_priority_seen",
            Cause::SplitBrain => "split_brain",
            Cause::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An advertisement from `src`, already parsed and checked
    /// ([`check_advert`](super::check_advert)).
    Advert {
        src: Ipv4Addr,
        repr: &'a Repr,
    },
    Startup,
    Shutdown,
    /// Effective priority (priority tracking), clamped to 1..=254, or 1..=255 for the
    /// owner. A master advertises the change at once.
    SetPriority(u8),
    /// While true a backup does not preempt a lower priority master (it still takes
    /// over when the master goes silent).
    HoldPreempt(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    BecameMaster {
        cause: Cause,
    },
    BecameBackup {
        cause: Cause,
    },
    /// Shutdown: now in Initialize.
    Stopped,
    /// As master, heard another master with lower priority (a healed split brain).
    /// Followed by [`Event::SendGarp`] when we re-advertised at once, which happens at
    /// most once per Advertisement_Interval.
    OtherMasterSeen {
        src: Ipv4Addr,
        priority: u8,
    },
    /// As backup, ignored a priority 0 advert from `src`, which is not the master
    /// followed (see [`Machine::is_stray_zero`]).
    ZeroFromNonMaster {
        src: Ipv4Addr,
    },
    /// Send gratuitous ARP for every VIP now (the shell repeats it later on its own).
    SendGarp,
    AddVips,
    RemoveVips,
}

impl Event {
    /// The state entered and why, for transition events (logs, metrics).
    pub fn transition(self) -> Option<(State, Cause)> {
        match self {
            Event::BecameMaster { cause } => Some((State::Master, cause)),
            Event::BecameBackup { cause } => Some((State::Backup, cause)),
            Event::Stopped => Some((State::Initialize, Cause::Shutdown)),
            _ => None,
        }
    }
}

/// `Skew_Time` in centiseconds (RFC 5798 §6.1), truncated.
pub fn skew_time_cs(priority: u8, master_adver_interval_cs: u16) -> u32 {
    (256 - u32::from(priority)) * u32::from(master_adver_interval_cs) / 256
}

/// `Master_Down_Interval` in centiseconds (RFC 5798 §6.1).
pub fn master_down_interval_cs(priority: u8, master_adver_interval_cs: u16) -> u32 {
    3 * u32::from(master_adver_interval_cs) + skew_time_cs(priority, master_adver_interval_cs)
}

fn cs(n: u32) -> Duration {
    Duration::from_millis(u64::from(n) * 10)
}

pub struct Machine {
    settings: Settings,
    /// Advertisement_Interval in centiseconds.
    adver_cs: u16,
    /// Effective priority.
    priority: u8,
    state: State,
    since: Instant,
    /// Master_Adver_Interval: learned from the master's adverts while Backup.
    master_adver_cs: u16,
    /// Adver_Timer (Master only).
    adver_timer: Option<Instant>,
    /// Master_Down_Timer (Backup only).
    master_down_timer: Option<Instant>,
    /// What becoming master by the Master_Down_Timer would be called.
    down_cause: Cause,
    /// Until when a lower priority master is still followed (preempt_delay).
    preempt_after: Option<Instant>,
    preempt_held: bool,
    /// The master a backup follows (source of the last accepted advert).
    master_ip: Option<Ipv4Addr>,
    /// When we last answered a received advert with one of ours (see [`Machine::reply`]).
    last_reply: Option<Instant>,
    transmits: VecDeque<Repr>,
    events: VecDeque<Event>,
}

impl Machine {
    /// A machine in Initialize; nothing happens until [`Input::Startup`].
    pub fn new(settings: Settings, now: Instant) -> Machine {
        let adver_cs = settings.advert_interval_cs();
        let priority = settings.priority.max(1);
        Machine {
            settings,
            adver_cs,
            priority,
            state: State::Initialize,
            since: now,
            master_adver_cs: adver_cs,
            adver_timer: None,
            master_down_timer: None,
            down_cause: Cause::MasterDown,
            preempt_after: None,
            preempt_held: false,
            master_ip: None,
            last_reply: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state was entered (or the machine made).
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn effective_priority(&self) -> u8 {
        self.priority
    }

    /// Master_Adver_Interval: our own interval, or the master's while Backup.
    pub fn master_adver_interval(&self) -> Duration {
        cs(u32::from(self.master_adver_cs))
    }

    /// Skew_Time for the effective priority and Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        cs(skew_time_cs(self.priority, self.master_adver_cs))
    }

    /// Master_Down_Interval for the effective priority and Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        cs(master_down_interval_cs(self.priority, self.master_adver_cs))
    }

    /// The master a backup follows (source of the last advert it accepted).
    pub fn master_ip(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => Some(self.settings.primary_ip),
            _ => self.master_ip,
        }
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Startup => self.startup(now),
            Input::Shutdown => self.shutdown(now),
            Input::SetPriority(p) => self.set_priority(now, p),
            Input::HoldPreempt(held) => self.preempt_held = held,
            Input::Advert { src, repr } => {
                if repr.vrid != self.settings.vrid || src == self.settings.primary_ip {
                    return; // not ours, or our own looped back
                }
                match self.state {
                    State::Initialize => {}
                    State::Backup => self.backup_rx(now, src, repr),
                    State::Master => self.master_rx(now, src, repr),
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Initialize => {}
            State::Backup => {
                if self.master_down_timer.is_some_and(|t| t <= now) {
                    self.become_master(now, self.down_cause);
                }
            }
            State::Master => {
                if self.adver_timer.is_some_and(|t| t <= now) {
                    self.send_advert(now);
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Initialize => None,
            State::Backup => self.master_down_timer,
            State::Master => self.adver_timer,
        }
    }

    /// The next advertisement to emit and send.
    pub fn poll_transmit(&mut self) -> Option<Repr> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.priority == PRIORITY_OWNER {
            self.become_master(now, Cause::StartupOwner);
            return;
        }
        self.master_adver_cs = self.adver_cs;
        self.master_ip = None;
        self.enter(now, State::Backup);
        self.master_down_timer = Some(now + self.master_down_interval());
        self.down_cause = Cause::MasterDown;
        self.preempt_after = self.preempt_window(now);
        self.events.push_back(Event::BecameBackup {
            cause: Cause::Startup,
        });
    }

    fn shutdown(&mut self, now: Instant) {
        match self.state {
            State::Initialize => return,
            State::Backup => {}
            State::Master => {
                self.transmits.push_back(self.advert(0));
                self.events.push_back(Event::RemoveVips);
            }
        }
        self.adver_timer = None;
        self.master_down_timer = None;
        self.preempt_after = None;
        self.master_ip = None;
        self.enter(now, State::Initialize);
        self.events.push_back(Event::Stopped);
    }

    fn set_priority(&mut self, now: Instant, p: u8) {
        let max = if self.settings.priority == PRIORITY_OWNER {
            PRIORITY_OWNER
        } else {
            PRIORITY_OWNER - 1
        };
        let p = p.clamp(1, max);
        if p == self.priority {
            return;
        }
        self.priority = p;
        if self.state == State::Master {
            self.send_advert(now);
        }
        // A backup keeps its running Master_Down_Timer; the next advert recomputes it.
    }

    /// Whether `repr` from `src` is a priority 0 advert this backup ignores: only the
    /// master it follows hands over, so another host's "leaving" advert cannot make it
    /// take the addresses beside the running master. RFC 5798 §6.4.2 does not look
    /// at the sender; a backup that has not yet heard a master cannot tell, and takes
    /// it, and a forger who spoofs the master's address is not stopped.
    pub fn is_stray_zero(&self, src: Ipv4Addr, repr: &Repr) -> bool {
        repr.priority == 0
            && repr.vrid == self.settings.vrid
            && self.state == State::Backup
            && self.master_ip.is_some_and(|m| m != src)
    }

    /// RFC 5798 §6.4.2, "If an ADVERTISEMENT is received".
    fn backup_rx(&mut self, now: Instant, src: Ipv4Addr, repr: &Repr) {
        if repr.priority == 0 {
            if self.is_stray_zero(src, repr) {
                self.events.push_back(Event::ZeroFromNonMaster { src });
                return;
            }
            // A later one never pushes the takeover out: a stream of them (forged with
            // the master's address) must not keep the backup waiting.
            let due = now + self.skew_time();
            self.master_down_timer = Some(self.master_down_timer.map_or(due, |t| t.min(due)));
            self.down_cause = Cause::PriorityZero;
            return;
        }
        let lower = repr.priority < self.priority;
        let follow =
            !self.settings.preempt || self.preempt_held || !lower || self.in_preempt_delay(now);
        if follow {
            self.master_adver_cs = repr.max_advert_int_cs.clamp(1, MAX_ADVERT_INT_CS);
            self.master_down_timer = Some(now + self.master_down_interval());
            self.down_cause = Cause::MasterDown;
            self.master_ip = Some(src);
            if !lower {
                self.preempt_after = None;
            }
        } else {
            // Discard: the Master_Down_Timer runs out and we preempt.
            self.down_cause = Cause::Preempt;
        }
    }

    /// Whether preempt_delay still makes us follow a lower priority master; starts
    /// the delay on the first such advert (keepalived's behaviour).
    fn in_preempt_delay(&mut self, now: Instant) -> bool {
        if self.settings.preempt_delay.is_zero() {
            return false;
        }
        match self.preempt_after {
            None => {
                self.preempt_after = self.preempt_window(now);
                true
            }
            Some(t) => now < t,
        }
    }

    fn preempt_window(&self, now: Instant) -> Option<Instant> {
        let d = self.settings.preempt_delay;
        (!d.is_zero()).then(|| now + d)
    }

    /// RFC 5798 §6.4.3, "If an ADVERTISEMENT is received", plus keepalived's answer to
    /// a lower priority master.
    fn master_rx(&mut self, now: Instant, src: Ipv4Addr, repr: &Repr) {
        if repr.priority == 0 {
            self.reply(now);
            return;
        }
        let higher = repr.priority > self.priority;
        // The address owner never yields (RFC 5798 §7.1: it takes no advert), so a
        // stray or forged owner advert from a higher address cannot take the VIP
        // from it; it still answers one, re-asserting with gratuitous ARP.
        let tie_lost = repr.priority == self.priority
            && src > self.settings.primary_ip
            && self.priority != PRIORITY_OWNER;
        if higher || tie_lost {
            // One last advert as we yield (keepalived's higher_prio_send_advert): after a
            // healed split the winner may not have heard us yet, and this makes it
            // re-assert with gratuitous ARP so neighbours stop pointing at us.
            self.transmits.push_back(self.advert(self.priority));
            self.adver_timer = None;
            self.master_adver_cs = repr.max_advert_int_cs.clamp(1, MAX_ADVERT_INT_CS);
            self.master_ip = Some(src);
            self.enter(now, State::Backup);
            self.master_down_timer = Some(now + self.master_down_interval());
            self.down_cause = Cause::MasterDown;
            self.preempt_after = None;
            let cause = if higher {
                Cause::HigherPrioritySeen
            } else {
                Cause::SplitBrain
            };
            self.events.push_back(Event::RemoveVips);
            self.events.push_back(Event::BecameBackup { cause });
        } else {
            let replied = self.reply(now);
            self.events.push_back(Event::OtherMasterSeen {
                src,
                priority: repr.priority,
            });
            if replied {
                self.events.push_back(Event::SendGarp);
            }
        }
    }

    /// An advert at once in answer to a received one, unless we already answered one
    /// less than an Advertisement_Interval ago: the answer only speeds things up (the
    /// Adver_Timer sends anyway), and adverts are unauthenticated. Returns whether it
    /// was sent.
    fn reply(&mut self, now: Instant) -> bool {
        let interval = cs(u32::from(self.adver_cs));
        if self.last_reply.is_some_and(|t| now < t + interval) {
            return false;
        }
        self.last_reply = Some(now);
        self.send_advert(now);
        true
    }

    fn become_master(&mut self, now: Instant, cause: Cause) {
        self.master_down_timer = None;
        self.preempt_after = None;
        self.master_adver_cs = self.adver_cs;
        self.enter(now, State::Master);
        self.send_advert(now);
        self.events.push_back(Event::BecameMaster { cause });
        self.events.push_back(Event::AddVips);
        self.events.push_back(Event::SendGarp);
    }

    fn enter(&mut self, now: Instant, state: State) {
        self.state = state;
        self.since = now;
    }

    /// Queues an advert with the effective priority and restarts the Adver_Timer.
    fn send_advert(&mut self, now: Instant) {
        self.transmits.push_back(self.advert(self.priority));
        self.adver_timer = Some(now + cs(u32::from(self.adver_cs)));
    }

    fn advert(&self, priority: u8) -> Repr {
        Repr {
            vrid: self.settings.vrid,
            priority,
            max_advert_int_cs: self.adver_cs,
            addrs: self.settings.vips.iter().take(MAX_ADDRS).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests;
