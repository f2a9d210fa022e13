//! The intake's one subscription, without a broker: when to subscribe, and
//! when posts are being taken (`/readyz`).
//!
//! The session is persistent: a connection on which the broker kept the
//! session holds the subscription already; a new session subscribes, and
//! only the SUBACK of that SUBSCRIBE (by packet id) says whether posts come.

use rumqttc::{SubAck, SubscribeReasonCode};

/// What the intake is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Subscribe,
    /// Posts are being taken.
    Taking,
    /// The broker refused the subscription.
    Refused,
    /// The connection went: `was_taking` says whether it had been up.
    Stopped {
        was_taking: bool,
    },
    Nothing,
}

/// Where the subscription stands on the current connection.
#[derive(Debug, Default)]
pub struct Subscription {
    taking: bool,
    /// A SUBSCRIBE was asked for and not written yet.
    asked: bool,
    /// The packet id it was written with, until its SUBACK.
    written: Option<u16>,
}

impl Subscription {
    pub fn connected(&mut self, session_present: bool) -> Step {
        self.written = None;
        self.asked = !session_present;
        if session_present {
            self.taking = true;
            Step::Taking
        } else {
            Step::Subscribe
        }
    }

    /// rumqttc wrote a SUBSCRIBE with this packet id.
    pub fn written(&mut self, pkid: u16) {
        if std::mem::take(&mut self.asked) {
            self.written = Some(pkid);
        }
    }

    pub fn acknowledged(&mut self, ack: &SubAck) -> Step {
        if self.written != Some(ack.pkid) {
            return Step::Nothing;
        }
        self.written = None;
        self.taking = !ack.return_codes.contains(&SubscribeReasonCode::Failure);
        if self.taking {
            Step::Taking
        } else {
            Step::Refused
        }
    }

    /// The SUBSCRIBE could not be handed over: nothing is taken on this connection.
    pub fn not_sent(&mut self) {
        self.asked = false;
    }

    pub fn lost(&mut self) -> Step {
        self.asked = false;
        self.written = None;
        Step::Stopped {
            was_taking: std::mem::take(&mut self.taking),
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::QoS;

    use super::*;

    fn suback(pkid: u16, code: SubscribeReasonCode) -> SubAck {
        SubAck::new(pkid, vec![code])
    }

    const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

    #[test]
    fn a_new_session_subscribes_and_takes_posts_once_its_own_suback_comes() {
        let mut subscription = Subscription::default();
        assert_eq!(subscription.connected(false), Step::Subscribe);
        subscription.written(9);
        assert_eq!(
            subscription.acknowledged(&suback(8, GRANTED)),
            Step::Nothing
        );
        assert_eq!(subscription.acknowledged(&suback(9, GRANTED)), Step::Taking);
        assert_eq!(subscription.lost(), Step::Stopped { was_taking: true });
        assert_eq!(subscription.lost(), Step::Stopped { was_taking: false });
    }

    #[test]
    fn a_kept_session_takes_posts_at_once() {
        let mut subscription = Subscription::default();
        assert_eq!(subscription.connected(true), Step::Taking);
        subscription.written(3);
        assert_eq!(
            subscription.acknowledged(&suback(3, GRANTED)),
            Step::Nothing,
            "not a SUBSCRIBE of ours"
        );
    }

    #[test]
    fn a_refused_subscription_takes_nothing() {
        let mut subscription = Subscription::default();
        subscription.connected(false);
        subscription.written(1);
        let refused = suback(1, SubscribeReasonCode::Failure);
        assert_eq!(subscription.acknowledged(&refused), Step::Refused);
        assert_eq!(subscription.lost(), Step::Stopped { was_taking: false });
    }
}
