//! The subscriber's bookkeeping, without a broker: which filters to
//! subscribe and unsubscribe as channels gain and lose their listeners here,
//! what to subscribe again on a new connection, and which SUBACK answers
//! which SUBSCRIBE.
//!
//! rumqttc does not say which packet id a SUBSCRIBE gets; it reports
//! `Outgoing::Subscribe(pkid)` as it writes each, in the order they were
//! requested on that connection (the connection module keeps requests of one
//! connection off the next). So the requests not yet written wait in order,
//! and a written one waits for its SUBACK under its packet id. rumqttc takes
//! the ids of SUBSCRIBE, UNSUBSCRIBE and QoS 1 PUBLISH (presence) from one
//! counter that wraps around, so two SUBSCRIBEs may be awaiting SUBACKs under
//! the same id: they are answered in the order they were written.
//!
//! A channel counts as subscribed only when the SUBACK answers its latest
//! request: one that a leave and a join overtook says nothing about it.
//!
//! A channel (or every channel) is two filters in the same SUBSCRIBE: its
//! messages and its signals ([`Target::filters`]). The messages filter
//! decides whether the channel is held; signals are best effort, so a broker
//! that refuses only those (an ACL) still delivers the channel's messages.

use std::collections::{HashMap, VecDeque};

use protocol::ChannelId;
use rumqttc::{SubAck, SubscribeReasonCode};

use crate::hub::SubscriptionChange;

/// Targets per SUBSCRIBE packet (each channel is two topic filters).
pub const FILTERS_PER_PACKET: usize = 100;

/// One filter the subscriber holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Channel(ChannelId),
    /// Every channel at once (a node that follows all).
    AllChannels,
    /// Watchers asking for this node's presence.
    PresenceRefresh,
}

impl Target {
    /// Topic filters the target takes in a SUBSCRIBE, in the order the
    /// subscriber writes them: a channel's (or every channel's) messages,
    /// then its signals; the presence refresh is one.
    pub fn filters(self) -> usize {
        match self {
            Target::Channel(_) | Target::AllChannels => 2,
            Target::PresenceRefresh => 1,
        }
    }
}

/// What the subscriber is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send one SUBSCRIBE; tell [`Subscriptions::not_sent`] if it cannot go.
    Subscribe(Request),
    Unsubscribe(Target),
    /// The broker acknowledged these channels: live messages flow.
    Subscribed(Vec<ChannelId>),
    /// The broker refused these filters.
    Refused(Vec<Target>),
}

/// One SUBSCRIBE, numbered in the order they were asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub number: u64,
    pub targets: Vec<Target>,
}

/// Where one wanted filter stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// To be subscribed (not connected yet, or its request could not go).
    Unrequested,
    /// Asked for by this request, no SUBACK yet.
    Requested(u64),
    Held,
    /// Refused by the broker: asked again on the next connection only.
    Refused,
}

/// The subscriber's bookkeeping (see the module's docs).
#[derive(Debug)]
pub struct Subscriptions {
    /// One wildcard for every channel instead of one filter per channel.
    follow_all: bool,
    connected: bool,
    /// Channels with listeners here. With `follow_all` their state mirrors
    /// the wildcard's.
    channels: HashMap<ChannelId, State>,
    /// The wildcard, while any channel has a listener (with `follow_all`).
    all: Option<State>,
    refresh: State,
    /// Wanted channels whose SUBSCRIBE is still to be asked for.
    to_request: Vec<ChannelId>,
    last_request: u64,
    /// Requests handed to the client and not yet written, in order.
    unwritten: VecDeque<Request>,
    /// Written requests awaiting their SUBACK, by packet id, in the order written.
    unacknowledged: HashMap<u16, VecDeque<Request>>,
}

impl Subscriptions {
    pub fn new(follow_all: bool) -> Self {
        Subscriptions {
            follow_all,
            connected: false,
            channels: HashMap::new(),
            all: None,
            refresh: State::Unrequested,
            to_request: Vec::new(),
            last_request: 0,
            unwritten: VecDeque::new(),
            unacknowledged: HashMap::new(),
        }
    }

    /// A new connection (clean session): nothing is subscribed on it yet.
    pub fn connected(&mut self) -> Vec<Command> {
        self.forget_connection();
        self.connected = true;
        let mut commands = vec![self.request(vec![Target::PresenceRefresh])];
        if self.follow_all {
            if !self.channels.is_empty() {
                commands.push(self.request(vec![Target::AllChannels]));
            }
        } else {
            self.to_request = self.channels.keys().copied().collect();
            self.request_channels(&mut commands);
        }
        commands
    }

    /// The connection is gone, with every subscription on it. Whether it
    /// was up (else it was an attempt that failed).
    pub fn lost(&mut self) -> bool {
        let was_connected = self.connected;
        self.forget_connection();
        was_connected
    }

    /// Channels that gained their first listener or lost their last, in the
    /// order the hub saw it.
    pub fn changed(&mut self, changes: &[SubscriptionChange]) -> Vec<Command> {
        let mut commands = Vec::new();
        for change in changes {
            match *change {
                SubscriptionChange::Subscribe(channel) => self.joined(channel, &mut commands),
                SubscriptionChange::Unsubscribe(channel) => self.left(channel, &mut commands),
            }
        }
        if self.connected && !self.follow_all {
            self.request_channels(&mut commands);
        }
        commands
    }

    /// rumqttc wrote the next SUBSCRIBE with this packet id.
    pub fn written(&mut self, pkid: u16) {
        match self.unwritten.pop_front() {
            Some(request) => self
                .unacknowledged
                .entry(pkid)
                .or_default()
                .push_back(request),
            None => log::warn!("a SUBSCRIBE (packet {pkid}) that was not asked for"),
        }
    }

    /// The broker answered the SUBSCRIBE written with this packet id.
    pub fn acknowledged(&mut self, ack: &SubAck) -> Vec<Command> {
        let Some(request) = self.take_unacknowledged(ack.pkid) else {
            log::warn!("a SUBACK (packet {}) that answers nothing", ack.pkid);
            return Vec::new();
        };
        let mut subscribed = Vec::new();
        let mut refused = Vec::new();
        let mut codes = ack.return_codes.iter();
        for target in &request.targets {
            let mut of_target = codes.by_ref().take(target.filters());
            // The first filter (messages) decides; a refused signals filter
            // only costs the channel its signals.
            let Some(code) = of_target.next() else {
                break;
            };
            if of_target.any(|code| matches!(code, SubscribeReasonCode::Failure)) {
                log::warn!("the broker refused the signals of {target:?}");
            }
            let held = !matches!(code, SubscribeReasonCode::Failure);
            if self.answered(*target, request.number, held, &mut subscribed) && !held {
                refused.push(*target);
            }
        }
        let mut commands = Vec::new();
        if !subscribed.is_empty() {
            commands.push(Command::Subscribed(subscribed));
        }
        if !refused.is_empty() {
            commands.push(Command::Refused(refused));
        }
        commands
    }

    /// The client could not hand this request over: its filters wait for
    /// [`Subscriptions::retry`].
    pub fn not_sent(&mut self, number: u64) {
        let Some(at) = self.unwritten.iter().rposition(|r| r.number == number) else {
            return;
        };
        let Some(request) = self.unwritten.remove(at) else {
            return;
        };
        for target in request.targets {
            if let Some(state) = self.state_of(target)
                && *state == State::Requested(number)
            {
                *state = State::Unrequested;
                if let Target::Channel(channel) = target {
                    self.to_request.push(channel);
                }
            }
        }
    }

    /// Whether a request could not go and waits for [`Subscriptions::retry`].
    pub fn needs_retry(&self) -> bool {
        self.connected
            && (self.refresh == State::Unrequested
                || self.all == Some(State::Unrequested)
                || !self.to_request.is_empty())
    }

    /// Asks again for what could not be handed over.
    pub fn retry(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        if !self.connected {
            return commands;
        }
        if self.refresh == State::Unrequested {
            commands.push(self.request(vec![Target::PresenceRefresh]));
        }
        if self.all == Some(State::Unrequested) {
            commands.push(self.request(vec![Target::AllChannels]));
        }
        self.request_channels(&mut commands);
        commands
    }

    fn joined(&mut self, channel: ChannelId, commands: &mut Vec<Command>) {
        if self.channels.contains_key(&channel) {
            return;
        }
        if !self.follow_all {
            self.channels.insert(channel, State::Unrequested);
            self.to_request.push(channel);
            return;
        }
        let state = self.all.unwrap_or(State::Unrequested);
        self.channels.insert(channel, state);
        match self.all {
            Some(State::Held) => commands.push(Command::Subscribed(vec![channel])),
            Some(_) => {}
            None if self.connected => commands.push(self.request(vec![Target::AllChannels])),
            None => self.all = Some(State::Unrequested),
        }
    }

    fn left(&mut self, channel: ChannelId, commands: &mut Vec<Command>) {
        let Some(state) = self.channels.remove(&channel) else {
            return;
        };
        let (target, state) = if self.follow_all {
            if !self.channels.is_empty() {
                return;
            }
            (Target::AllChannels, self.all.take())
        } else {
            (Target::Channel(channel), Some(state))
        };
        if self.connected && matches!(state, Some(State::Requested(_) | State::Held)) {
            commands.push(Command::Unsubscribe(target));
        }
    }

    /// Asks for every channel waiting to be subscribed, a packet's worth at a time.
    fn request_channels(&mut self, commands: &mut Vec<Command>) {
        let mut waiting = std::mem::take(&mut self.to_request);
        waiting.retain(|channel| self.channels.get(channel) == Some(&State::Unrequested));
        waiting.sort_unstable_by_key(|channel| *channel.as_bytes());
        waiting.dedup();
        for batch in waiting.chunks(FILTERS_PER_PACKET) {
            let targets = batch.iter().copied().map(Target::Channel).collect();
            commands.push(self.request(targets));
        }
    }

    /// A new request for `targets`, marked requested by it.
    fn request(&mut self, targets: Vec<Target>) -> Command {
        self.last_request += 1;
        let number = self.last_request;
        for target in &targets {
            if let Some(state) = self.state_of(*target) {
                *state = State::Requested(number);
            }
            if *target == Target::AllChannels {
                self.all = Some(State::Requested(number));
            }
        }
        let request = Request { number, targets };
        self.unwritten.push_back(request.clone());
        Command::Subscribe(request)
    }

    /// Records the broker's answer for one target of request `number`, if
    /// that request is still the target's latest; whether it was.
    fn answered(
        &mut self,
        target: Target,
        number: u64,
        held: bool,
        subscribed: &mut Vec<ChannelId>,
    ) -> bool {
        let Some(state) = self.state_of(target) else {
            return false;
        };
        if *state != State::Requested(number) {
            return false;
        }
        *state = if held { State::Held } else { State::Refused };
        match target {
            Target::Channel(channel) if held => subscribed.push(channel),
            Target::AllChannels => {
                for (channel, state) in &mut self.channels {
                    *state = if held { State::Held } else { State::Refused };
                    if held {
                        subscribed.push(*channel);
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn state_of(&mut self, target: Target) -> Option<&mut State> {
        match target {
            Target::Channel(channel) if !self.follow_all => self.channels.get_mut(&channel),
            Target::Channel(_) => None,
            Target::AllChannels => self.all.as_mut(),
            Target::PresenceRefresh => Some(&mut self.refresh),
        }
    }

    fn take_unacknowledged(&mut self, pkid: u16) -> Option<Request> {
        let waiting = self.unacknowledged.get_mut(&pkid)?;
        let request = waiting.pop_front();
        if waiting.is_empty() {
            self.unacknowledged.remove(&pkid);
        }
        request
    }

    /// Nothing asked on a connection counts any more.
    fn forget_connection(&mut self) {
        self.connected = false;
        self.unwritten.clear();
        self.unacknowledged.clear();
        self.to_request.clear();
        self.refresh = State::Unrequested;
        for state in self.channels.values_mut() {
            *state = State::Unrequested;
        }
        if self.all.is_some() {
            self.all = Some(State::Unrequested);
        }
    }
}

#[cfg(test)]
mod tests;
