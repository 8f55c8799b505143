//! Live updates of jobs in flight, for `GET /api/jobs/{id}/events`: each
//! job's status as it changes, its transcript segments as soon as they are
//! decoded, and one final update when it ends.
//!
//! The registry owns a [`Feeds`] and publishes into it from its handlers,
//! so a subscriber gets the state at the moment it subscribed plus every
//! later update, with nothing lost in between. A feed is a bounded
//! broadcast channel; a subscriber that falls behind is told so (it then
//! subscribes again and gets the state afresh). Partial segments are kept
//! while the job runs (a late subscriber gets them all) and dropped when it
//! ends: the stored result replaces them.

use std::collections::HashMap;

use tokio::sync::broadcast;
use uuid::Uuid;

use super::Job;
use crate::result::PartialSegment;

/// Updates a feed holds for a subscriber that has not read them yet.
const CAPACITY: usize = 256;

/// One update of a job in flight.
#[derive(Debug, Clone)]
pub enum Update {
    /// The job's record changed (status, progress, step, ETA).
    Status(Box<Job>),
    /// Segments just decoded, numbered in arrival order.
    Segments(Vec<PartialSegment>),
    /// The job ended: its final record, or None once deleted.
    End(Option<Box<Job>>),
}

/// What a new subscriber starts from.
pub struct Subscription {
    /// Every partial segment so far.
    pub segments: Vec<PartialSegment>,
    pub updates: broadcast::Receiver<Update>,
}

#[derive(Default)]
pub struct Feeds {
    feeds: HashMap<Uuid, Feed>,
}

struct Feed {
    tx: broadcast::Sender<Update>,
    segments: Vec<PartialSegment>,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            tx: broadcast::channel(CAPACITY).0,
            segments: Vec::new(),
        }
    }
}

impl Feeds {
    /// Starts (or restarts, after a restart of the job) the job's feed:
    /// partial segments of an earlier attempt are dropped.
    pub fn open(&mut self, id: Uuid) {
        self.feeds
            .entry(id)
            .or_insert_with(Feed::new)
            .segments
            .clear();
    }

    pub fn subscribe(&mut self, id: Uuid) -> Subscription {
        let feed = self.feeds.entry(id).or_insert_with(Feed::new);
        Subscription {
            segments: feed.segments.clone(),
            updates: feed.tx.subscribe(),
        }
    }

    /// Publishes job `id`'s record (made by `record`, only when the job
    /// has a feed) to its subscribers.
    pub fn status(&self, id: Uuid, record: impl FnOnce() -> Job) {
        if let Some(feed) = self.feeds.get(&id) {
            let _ = feed.tx.send(Update::Status(Box::new(record())));
        }
    }

    /// Numbers and keeps the segments (only for a job whose feed is open)
    /// and publishes them. Returns the end of the last one, in seconds.
    pub fn segments(&mut self, id: Uuid, mut segments: Vec<PartialSegment>) -> Option<f64> {
        let feed = self.feeds.get_mut(&id)?;
        for s in &mut segments {
            s.id = feed.segments.len() + 1;
            feed.segments.push(s.clone());
        }
        let end = segments
            .iter()
            .map(|s| s.end)
            .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))));
        let _ = feed.tx.send(Update::Segments(segments));
        end
    }

    /// The job ended: tells its subscribers and forgets the feed.
    pub fn end(&mut self, id: Uuid, job: Option<&Job>) {
        if let Some(feed) = self.feeds.remove(&id) {
            let _ = feed.tx.send(Update::End(job.cloned().map(Box::new)));
        }
    }

    /// Jobs with a feed open (in flight, or waited on by a subscriber).
    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, text: &str) -> PartialSegment {
        PartialSegment {
            id: 0,
            start,
            end,
            text: text.into(),
        }
    }

    #[test]
    fn a_late_subscriber_gets_every_segment_so_far_then_the_rest_then_the_end() {
        let id = Uuid::new_v4();
        let mut feeds = Feeds::default();
        assert_eq!(feeds.segments(id, vec![seg(0.0, 1.0, "lost")]), None);
        feeds.open(id);
        let mut early = feeds.subscribe(id);
        assert!(early.segments.is_empty());
        assert_eq!(
            feeds.segments(id, vec![seg(0.0, 1.0, "a"), seg(1.0, 2.5, "b")]),
            Some(2.5)
        );
        let late = feeds.subscribe(id);
        assert_eq!(
            late.segments
                .iter()
                .map(|s| (s.id, s.text.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "a"), (2, "b")]
        );
        feeds.segments(id, vec![seg(2.5, 3.0, "c")]);
        feeds.end(id, None);
        let Ok(Update::Segments(first)) = early.updates.try_recv() else {
            panic!("segments first")
        };
        assert_eq!(first.len(), 2);
        let mut late_updates = late.updates;
        let Ok(Update::Segments(next)) = late_updates.try_recv() else {
            panic!("then the new segment")
        };
        assert_eq!((next[0].id, next[0].text.as_str()), (3, "c"));
        assert!(matches!(late_updates.try_recv(), Ok(Update::End(None))));
        assert!(feeds.is_empty(), "an ended job's feed is gone");
    }
}
