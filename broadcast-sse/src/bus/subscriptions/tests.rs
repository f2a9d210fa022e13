use rumqttc::QoS;

use super::*;
use SubscriptionChange::{Subscribe as Join, Unsubscribe as Leave};

fn channel(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

/// A SUBACK granting every filter of `targets` targets (two each: a channel's
/// messages and signals; a presence refresh uses only the first).
fn granted(pkid: u16, targets: usize) -> SubAck {
    SubAck::new(
        pkid,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2 * targets],
    )
}

/// The requests among `commands`, as (number, targets).
fn requests(commands: &[Command]) -> Vec<(u64, Vec<Target>)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Subscribe(request) => Some((request.number, request.targets.clone())),
            _ => None,
        })
        .collect()
}

/// Connected, with the presence refresh written (packet 1) and acknowledged.
fn connected(follow_all: bool) -> Subscriptions {
    let mut subscriptions = Subscriptions::new(follow_all);
    let commands = subscriptions.connected();
    assert_eq!(requests(&commands), [(1, vec![Target::PresenceRefresh])]);
    subscriptions.written(1);
    assert!(subscriptions.acknowledged(&granted(1, 1)).is_empty());
    subscriptions
}

#[test]
fn a_first_listener_subscribes_its_channel_and_the_suback_marks_it() {
    let mut subscriptions = connected(false);
    let commands = subscriptions.changed(&[Join(channel(1))]);
    assert_eq!(
        requests(&commands),
        [(2, vec![Target::Channel(channel(1))])]
    );
    subscriptions.written(2);
    assert_eq!(
        subscriptions.acknowledged(&granted(2, 1)),
        [Command::Subscribed(vec![channel(1)])]
    );
}

#[test]
fn the_last_listener_leaving_unsubscribes_and_a_channel_never_asked_for_costs_nothing() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1))]);
    let commands = subscriptions.changed(&[Leave(channel(1))]);
    assert_eq!(
        commands,
        [Command::Unsubscribe(Target::Channel(channel(1)))]
    );
    let commands = subscriptions.changed(&[Join(channel(2)), Leave(channel(2))]);
    assert!(
        commands.is_empty(),
        "joined and left within one batch: {commands:?}"
    );
}

#[test]
fn subacks_are_matched_by_packet_id_not_by_the_order_they_come_in() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1))]);
    subscriptions.changed(&[Join(channel(2))]);
    subscriptions.written(7);
    subscriptions.written(9);
    assert_eq!(
        subscriptions.acknowledged(&granted(9, 1)),
        [Command::Subscribed(vec![channel(2)])]
    );
    assert_eq!(
        subscriptions.acknowledged(&granted(7, 1)),
        [Command::Subscribed(vec![channel(1)])]
    );
    assert!(
        subscriptions.acknowledged(&granted(7, 1)).is_empty(),
        "answered once"
    );
}

/// rumqttc's packet ids wrap around, and presence publishes take ids from the
/// same counter: two SUBSCRIBEs may wait under one id.
#[test]
fn two_subscribes_written_under_one_packet_id_are_answered_in_the_order_written() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1))]);
    subscriptions.written(4);
    subscriptions.changed(&[Join(channel(2))]);
    subscriptions.written(4);
    assert_eq!(
        subscriptions.acknowledged(&granted(4, 1)),
        [Command::Subscribed(vec![channel(1)])]
    );
    assert_eq!(
        subscriptions.acknowledged(&granted(4, 1)),
        [Command::Subscribed(vec![channel(2)])]
    );
}

#[test]
fn a_suback_that_a_leave_and_a_join_overtook_does_not_mark_the_channel() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1))]);
    subscriptions.written(2);
    let commands = subscriptions.changed(&[Leave(channel(1)), Join(channel(1))]);
    assert_eq!(
        commands[0],
        Command::Unsubscribe(Target::Channel(channel(1)))
    );
    assert_eq!(
        requests(&commands),
        [(3, vec![Target::Channel(channel(1))])]
    );
    subscriptions.written(3);
    assert!(
        subscriptions.acknowledged(&granted(2, 1)).is_empty(),
        "the broker unsubscribes it next"
    );
    assert_eq!(
        subscriptions.acknowledged(&granted(3, 1)),
        [Command::Subscribed(vec![channel(1)])]
    );
}

#[test]
fn a_new_connection_subscribes_every_channel_with_listeners_a_packet_at_a_time() {
    let mut subscriptions = Subscriptions::new(false);
    let channels: Vec<ChannelId> = (0..=FILTERS_PER_PACKET as u8).map(channel).collect();
    let joins: Vec<SubscriptionChange> = channels.iter().copied().map(Join).collect();
    assert!(
        subscriptions.changed(&joins).is_empty(),
        "not connected yet"
    );
    let commands = subscriptions.connected();
    let sizes: Vec<usize> = requests(&commands).iter().map(|(_, t)| t.len()).collect();
    assert_eq!(
        sizes,
        [1, FILTERS_PER_PACKET, 1],
        "refresh, then the channels"
    );
    for pkid in 1..=3 {
        subscriptions.written(pkid);
    }
    let mut marked = Vec::new();
    for (pkid, filters) in [(1, 1), (2, FILTERS_PER_PACKET), (3, 1)] {
        for command in subscriptions.acknowledged(&granted(pkid, filters)) {
            if let Command::Subscribed(channels) = command {
                marked.extend(channels);
            }
        }
    }
    marked.sort_unstable_by_key(|channel| *channel.as_bytes());
    assert_eq!(marked, channels);
}

#[test]
fn after_a_lost_connection_nothing_asked_on_it_counts_and_everything_is_asked_again() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1)), Join(channel(2))]);
    subscriptions.written(2);
    assert!(subscriptions.lost(), "it was up");
    assert!(!subscriptions.lost(), "a failed attempt");
    assert!(
        subscriptions
            .changed(&[Leave(channel(2)), Join(channel(3))])
            .is_empty()
    );
    let commands = subscriptions.connected();
    let channels = vec![Target::Channel(channel(1)), Target::Channel(channel(3))];
    let mut asked = requests(&commands);
    asked[1].1.sort_unstable_by_key(|t| format!("{t:?}"));
    assert_eq!(asked, [(3, vec![Target::PresenceRefresh]), (4, channels)]);
    assert!(
        subscriptions.acknowledged(&granted(2, 2)).is_empty(),
        "the old connection's answer means nothing now"
    );
}

#[test]
fn a_request_that_could_not_go_is_asked_again_on_retry() {
    let mut subscriptions = connected(false);
    let commands = subscriptions.changed(&[Join(channel(1))]);
    assert!(!subscriptions.needs_retry());
    subscriptions.not_sent(requests(&commands)[0].0);
    assert!(subscriptions.needs_retry());
    let commands = subscriptions.retry();
    assert_eq!(
        requests(&commands),
        [(3, vec![Target::Channel(channel(1))])]
    );
    assert!(!subscriptions.needs_retry());
    subscriptions.written(5);
    assert_eq!(
        subscriptions.acknowledged(&granted(5, 1)),
        [Command::Subscribed(vec![channel(1)])]
    );
}

#[test]
fn a_refused_filter_is_reported_and_not_marked() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1)), Join(channel(2))]);
    subscriptions.written(2);
    let mut ack = granted(2, 2);
    // The second channel's messages filter.
    ack.return_codes[2] = SubscribeReasonCode::Failure;
    let commands = subscriptions.acknowledged(&ack);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(matches!(&commands[0], Command::Subscribed(c) if c.len() == 1));
    assert!(matches!(&commands[1], Command::Refused(t) if t.len() == 1));
    assert!(
        !subscriptions.needs_retry(),
        "asked again on the next connection"
    );
}

#[test]
fn a_refused_signals_filter_still_holds_the_channel() {
    let mut subscriptions = connected(false);
    subscriptions.changed(&[Join(channel(1))]);
    subscriptions.written(2);
    let mut ack = granted(2, 1);
    ack.return_codes[1] = SubscribeReasonCode::Failure;
    assert_eq!(
        subscriptions.acknowledged(&ack),
        [Command::Subscribed(vec![channel(1)])]
    );
}

#[test]
fn following_all_holds_one_wildcard_while_any_channel_has_a_listener() {
    let mut subscriptions = connected(true);
    let commands = subscriptions.changed(&[Join(channel(1))]);
    assert_eq!(requests(&commands), [(2, vec![Target::AllChannels])]);
    assert!(
        subscriptions.changed(&[Join(channel(2))]).is_empty(),
        "asked already"
    );
    subscriptions.written(2);
    let commands = subscriptions.acknowledged(&granted(2, 1));
    let Ok([Command::Subscribed(mut marked)]) = <[Command; 1]>::try_from(commands) else {
        panic!("not one Subscribed");
    };
    marked.sort_unstable_by_key(|channel| *channel.as_bytes());
    assert_eq!(marked, [channel(1), channel(2)]);
    assert_eq!(
        subscriptions.changed(&[Join(channel(3))]),
        [Command::Subscribed(vec![channel(3)])],
        "held already"
    );
    assert!(
        subscriptions
            .changed(&[Leave(channel(1)), Leave(channel(2))])
            .is_empty()
    );
    assert_eq!(
        subscriptions.changed(&[Leave(channel(3))]),
        [Command::Unsubscribe(Target::AllChannels)]
    );
}

#[test]
fn a_wildcard_released_before_its_suback_is_not_taken_as_held() {
    let mut subscriptions = connected(true);
    subscriptions.changed(&[Join(channel(1))]);
    subscriptions.written(2);
    let commands = subscriptions.changed(&[Leave(channel(1)), Join(channel(2))]);
    assert_eq!(commands[0], Command::Unsubscribe(Target::AllChannels));
    assert_eq!(requests(&commands), [(3, vec![Target::AllChannels])]);
    subscriptions.written(3);
    assert!(subscriptions.acknowledged(&granted(2, 1)).is_empty());
    assert_eq!(
        subscriptions.acknowledged(&granted(3, 1)),
        [Command::Subscribed(vec![channel(2)])]
    );
}
