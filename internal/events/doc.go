// Package events gives Griddle services durable, ordered events with
// at-least-once delivery.
//
// # Model
//
// A publishing service appends events to its own log, kept in a store key
// space under the reserved KeyPrefix: one log per (publisher, topic), in
// commit order. An event's key is completed by the store at commit
// (store.Tx.SetStamped, FoundationDB's versionstamped keys): appending
// reads nothing, so concurrent publishers of one topic never conflict and
// never retry because of the log (Publisher.Retries counts it). Its
// position (Pos) is that stamp, and its Seq a number taken from it that
// grows with commits, with gaps. Appending is a store write, so
// AppendTx can run inside the same transaction as the handler's state
// change: both commit, or neither does. That is why a publisher's log lives
// in the publisher's own key space (the only space its transactions
// touch); a topic published by several services is several logs, and a
// subscriber names each (TopicRef).
//
// After a commit the Publisher announces "<publisher>\x00<topic>\x00<seq>"
// (seq 0: the publisher does not know it)
// on a mangos PUB socket. Announcements are hints: they wake subscribers
// early, but may be lost (PUB drops for slow peers, a subscriber may not be
// connected yet), and carry no data.
//
// A Subscriber follows a set of logs. For each it keeps a durable cursor
// (the Pos of the last event delivered) in its Cursors key space, reads the
// log after the cursor in batches (on an announcement, on a new connection
// to an announcer, and every PollInterval), hands each event to Deliver in
// log order, and writes the cursor after each batch. Deliver errors are retried
// forever with back-off: an event is never skipped, so a failing event
// blocks its topic (and only its topic) until Deliver accepts it; Status
// shows the block.
//
// # Guarantees
//
//   - No loss: an event whose transaction committed is delivered, however
//     long the subscriber was slow or down, because it reads the log, not
//     the announcements.
//   - Order: within one (publisher, topic) events are delivered in commit
//     order (growing Pos; Seq never decreases). A restart resumes at the
//     stored cursor.
//   - At least once: after a crash, up to BatchSize events per topic that
//     were delivered but whose cursor was not yet written are delivered
//     again (same ID, same Pos). A clean stop (Run's ctx ends) writes the
//     cursor first, so it repeats nothing. Receivers deduplicate by
//     Event.ID, or by (Publisher, Topic, Pos).
//   - One Subscriber per subscriber name should run at a time; two would
//     both deliver every event (the cursor itself never moves back).
//
// A Trimmer bounds a publisher's logs per topic, by age and by number of
// events (Retention), in the background; run one per publisher (the
// sidecar elects one of the publisher's instances). Every Subscriber
// registers on the logs it follows, beside them in the publisher's key
// space, and RegisteredCursors finds the registered subscribers' stored
// cursors: the trim never removes an event one of them has not delivered,
// whether it runs now or not, unless the topic's Retention is Hard. Then
// such a subscriber goes on after the trimmed events and says so: a
// warning in its log, TopicStatus.Skipped, SubscriberConfig.OnSkip and
// Event.SkippedTo on the next event it delivers. Without a Trimmer a log
// grows with every event.
package events
