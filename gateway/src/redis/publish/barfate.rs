//! What the replies to a bar write decide, apart from the I/O. A bar goes to Redis as three
//! pipelined commands: `RPUSH` to its list, `LTRIM` to the latest 600, and a publish on its
//! channel. The list write alone decides the bar's fate:
//!
//! - appended: done, whatever the trim and the publish were answered, so no retry ever appends
//!   it twice (a redirect of the trim only delays the trim to the series' next bar; one of the
//!   publish only means subscribers take the bar when they reload the list after following the
//!   slot to its new node, which they do);
//! - refused (an error reply that is not a redirect: `WRONGTYPE` when the key is something
//!   else's, `OOM`, `NOPERM`): dropped and counted, since the same command would be refused
//!   again; the node is not taken down for one key;
//! - redirected: MOVED waits for the new map, ASK is written where the list is now;
//! - no reply (the connection failed first): waits for the node, and after the reconnection is
//!   checked against its list before it is written again (`barsync`: if Redis had taken it, the
//!   list's newest bar does not start before it, and it is not appended twice).

use crate::redis::cluster::{ask_target, moved_target};
use std::net::SocketAddr;

/// Which of a bar's commands a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmd {
    /// `RPUSH` to the list.
    Push,
    /// `LTRIM` of the list.
    Trim,
    /// `PUBLISH` / `SPUBLISH` on the channel.
    Publish,
}

/// A bar's fate, from the replies to its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fate {
    /// No reply to its list write yet.
    Unknown,
    /// In the list.
    Appended,
    /// Its slot is half-moved: to be written on this node after `ASKING`.
    Asked(SocketAddr),
    /// Its slot moved to this node: waits for the new map.
    Moved(SocketAddr),
    /// Refused, with the reason Redis gave.
    Refused(String),
}

/// What a reply says beside the bar's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Aside {
    /// Nothing.
    Nothing,
    /// A slot moved to this node: follow the new map.
    Remap(SocketAddr),
    /// The trim or the publish was refused, with the reason (the bar is in the list).
    Refused(String),
}

impl Fate {
    /// Takes the reply to one of the bar's commands: `err` is its error reply, if it was one.
    pub(super) fn reply(&mut self, cmd: Cmd, err: Option<&str>) -> Aside {
        let Some(e) = err else {
            if cmd == Cmd::Push {
                *self = Fate::Appended;
            }
            return Aside::Nothing;
        };
        let (asked, moved) = (ask_target(e), moved_target(e));
        if cmd == Cmd::Push {
            *self = match (asked, moved) {
                (Some(to), _) => Fate::Asked(to),
                (_, Some(to)) => Fate::Moved(to),
                _ => Fate::Refused(e.to_string()),
            };
            return moved.map_or(Aside::Nothing, Aside::Remap);
        }
        match (moved, asked) {
            (Some(to), _) => Aside::Remap(to),
            // the push was asked too (the list is not here): that write decides
            (_, Some(_)) => Aside::Nothing,
            // after a redirected or refused push, the trim and publish say nothing new
            _ if *self != Fate::Appended => Aside::Nothing,
            _ => Aside::Refused(e.to_string()),
        }
    }

    /// Whether the bar is finished with: appended, or refused for good.
    pub(super) fn settled(&self) -> bool {
        matches!(self, Fate::Appended | Fate::Refused(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOVED: &str = "MOVED 3999 127.0.0.1:7002";
    const ASK: &str = "ASK 3999 127.0.0.1:7003";

    fn fate(replies: &[(Cmd, Option<&str>)]) -> (Fate, Vec<Aside>) {
        let mut f = Fate::Unknown;
        let asides = replies.iter().map(|&(c, e)| f.reply(c, e)).collect();
        (f, asides)
    }

    #[test]
    fn the_list_write_alone_decides_and_an_appended_bar_is_never_written_again() {
        use Cmd::*;
        let ok = fate(&[(Push, None), (Trim, None), (Publish, None)]);
        assert_eq!(ok.0, Fate::Appended);
        // the slot moved (or began moving) after the push: the bar is in the list, which went
        // with its slot; the map is followed
        let moved_after = fate(&[(Push, None), (Trim, Some(MOVED)), (Publish, Some(MOVED))]);
        assert_eq!(moved_after.0, Fate::Appended);
        assert!(moved_after.0.settled());
        assert_eq!(
            moved_after.1[1],
            Aside::Remap("127.0.0.1:7002".parse().unwrap())
        );
        let asked_after = fate(&[(Push, None), (Trim, Some(ASK)), (Publish, None)]);
        assert_eq!(asked_after.0, Fate::Appended);
        assert_eq!(asked_after.1[1], Aside::Nothing);
    }

    #[test]
    fn a_redirected_push_is_written_where_the_list_is_and_a_refused_one_dropped() {
        use Cmd::*;
        let asked = fate(&[(Push, Some(ASK)), (Trim, Some(ASK)), (Publish, None)]);
        assert_eq!(asked.0, Fate::Asked("127.0.0.1:7003".parse().unwrap()));
        assert!(!asked.0.settled());
        let moved = fate(&[
            (Push, Some(MOVED)),
            (Trim, Some(MOVED)),
            (Publish, Some(MOVED)),
        ]);
        assert_eq!(moved.0, Fate::Moved("127.0.0.1:7002".parse().unwrap()));
        assert!(!moved.0.settled());
        let wrong = "WRONGTYPE Operation against a key holding the wrong kind of value";
        let refused = fate(&[(Push, Some(wrong)), (Trim, Some(wrong)), (Publish, None)]);
        assert_eq!(refused.0, Fate::Refused(wrong.into()));
        assert!(refused.0.settled());
        assert_eq!(
            refused.1[1],
            Aside::Nothing,
            "the push's refusal says it already"
        );
        // appended, but the publish refused: the bar stays appended, the reason comes aside
        let noperm = "NOPERM this user has no permissions to access the channel";
        let quiet = fate(&[(Push, None), (Trim, None), (Publish, Some(noperm))]);
        assert_eq!(quiet.0, Fate::Appended);
        assert_eq!(quiet.1[2], Aside::Refused(noperm.into()));
        // no reply at all (the connection failed first): it waits
        assert!(!Fate::Unknown.settled());
    }
}
