//! Who may do what on a channel. Every route asks [`decide`] (listings through [`listed`]);
//! nothing else grants access.
//!
//! | caller             | read public | read private | write (upload, delete) | manage (members, settings) | inspect (stats, check) | repair (rebuild, check and repair) |
//! |--------------------|-------------|--------------|------------------------|----------------------------|------------------------|------------------------------------|
//! | anonymous          | yes         | 401          | 401                    | 401                        | 401                    | 401                                |
//! | signed in, no role | yes         | 403          | 403                    | 403                        | 403                    | 403                                |
//! | member             | yes         | yes          | 403                    | 403                        | 403                    | 403                                |
//! | contributor        | yes         | yes          | yes                    | 403                        | 403                    | 403                                |
//! | owner              | yes         | yes          | yes                    | yes                        | 403                    | 403                                |
//! | site admin         | yes         | yes          | yes                    | yes                        | yes                    | yes                                |
//!
//! A key's scope narrows its user's rights, never widens them, a site admin's included: a
//! read-only key reads and inspects only, and a key limited to some channels acts as
//! signed-in-without-a-role everywhere else. Credentials that are present but invalid, expired
//! or revoked are refused with 401 before this applies.
//!
//! Whoever may not read a channel learns nothing of it: [`hidden`] says when a
//! refusal must look exactly like the answer for a channel that does not exist.

/// A user's role in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    /// Uploads and deletes packages (a CI bot, a developer who publishes), but does not manage
    /// the channel.
    Contributor,
    Member,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "owner" => Some(Self::Owner),
            "contributor" => Some(Self::Contributor),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Contributor => "contributor",
            Self::Member => "member",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Repodata, package files, HEAD, channel details.
    Read,
    /// Uploading and deleting packages.
    Write,
    /// Members, visibility, deleting the channel.
    Manage,
    /// What the server knows of a channel's index (stats, the consistency check): site admins.
    Inspect,
    /// Rebuilding a channel's index, or repairing what the check found: site admins.
    Repair,
}

impl Action {
    /// Whether the action changes anything, which a read-only key may not do.
    pub fn changes(self) -> bool {
        !matches!(self, Self::Read | Self::Inspect)
    }
}

/// What a key's scope allows, as seen by one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyScope {
    pub read_only: bool,
    /// False when the key is limited to other channels.
    pub covers_channel: bool,
}

impl KeyScope {
    pub const FULL: KeyScope = KeyScope {
        read_only: false,
        covers_channel: true,
    };
}

/// A signed-in caller as seen by one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub is_admin: bool,
    pub role: Option<Role>,
    pub scope: KeyScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No credentials: the caller should sign in (401).
    Unauthenticated,
    /// Signed in without the right (403).
    Forbidden,
}

pub fn decide(action: Action, private: bool, caller: Option<Caller>) -> Decision {
    let public_read = action == Action::Read && !private;
    let Some(caller) = caller else {
        return if public_read {
            Decision::Allow
        } else {
            Decision::Unauthenticated
        };
    };
    let allowed = if !caller.scope.covers_channel {
        public_read
    } else if caller.scope.read_only && action.changes() {
        false
    } else {
        caller.is_admin
            || match action {
                Action::Read => !private || caller.role.is_some(),
                Action::Write => matches!(caller.role, Some(Role::Owner | Role::Contributor)),
                Action::Manage => caller.role == Some(Role::Owner),
                Action::Inspect | Action::Repair => false,
            }
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

/// Whether a refusal of `caller` on a channel that exists must answer as if it did not: they
/// may not read it, so its name, visibility and contents are none of their business.
pub fn hidden(private: bool, caller: Option<Caller>) -> bool {
    decide(Action::Read, private, caller) != Decision::Allow
}

/// A signed-in user and the limits of the key they signed in with, before any channel is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHolder<'a> {
    pub is_admin: bool,
    pub read_only: bool,
    /// The channels the key is limited to; `None`: no limit.
    pub channels: Option<&'a [String]>,
}

impl KeyHolder<'_> {
    /// The holder as `channel` sees them, where their user has `role`.
    pub fn on(&self, channel: &str, role: Option<Role>) -> Caller {
        Caller {
            is_admin: self.is_admin,
            role,
            scope: KeyScope {
                read_only: self.read_only,
                covers_channel: self.reaches(channel),
            },
        }
    }

    /// Whether the key works on `channel` at all: what it may tell of the user's channels.
    pub fn reaches(&self, channel: &str) -> bool {
        self.channels
            .is_none_or(|channels| channels.iter().any(|c| c == channel))
    }

    /// Creating channels and managing one's own keys needs a key without limits, so that a
    /// limited key cannot mint itself a broader one or reach past its channels.
    pub fn may_manage_account(&self) -> bool {
        !self.read_only && self.channels.is_none()
    }
}

/// Whether a listing of channels shows `channel` to `holder` (`None`: anonymous): exactly
/// when they may read it, so a listing names nothing its reader could not open.
pub fn listed(
    holder: Option<&KeyHolder>,
    channel: &str,
    private: bool,
    role: Option<Role>,
) -> bool {
    let caller = holder.map(|holder| holder.on(channel, role));
    decide(Action::Read, private, caller) == Decision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(is_admin: bool, role: Option<Role>, scope: KeyScope) -> Option<Caller> {
        Some(Caller {
            is_admin,
            role,
            scope,
        })
    }

    const READ_ONLY: KeyScope = KeyScope {
        read_only: true,
        covers_channel: true,
    };
    const ELSEWHERE: KeyScope = KeyScope {
        read_only: false,
        covers_channel: false,
    };

    #[test]
    fn the_policy_table() {
        use Decision::*;
        let owner = Some(Role::Owner);
        let (u, f) = (Unauthenticated, Forbidden);
        // (who, caller, [read public, read private, write, manage, inspect, repair])
        let rows = [
            ("anonymous", None, [Allow, u, u, u, u, u]),
            (
                "no role",
                caller(false, None, KeyScope::FULL),
                [Allow, f, f, f, f, f],
            ),
            (
                "member",
                caller(false, Some(Role::Member), KeyScope::FULL),
                [Allow, Allow, f, f, f, f],
            ),
            (
                "contributor",
                caller(false, Some(Role::Contributor), KeyScope::FULL),
                [Allow, Allow, Allow, f, f, f],
            ),
            (
                "contributor, read-only key",
                caller(false, Some(Role::Contributor), READ_ONLY),
                [Allow, Allow, f, f, f, f],
            ),
            (
                "owner",
                caller(false, owner, KeyScope::FULL),
                [Allow, Allow, Allow, Allow, f, f],
            ),
            ("admin", caller(true, None, KeyScope::FULL), [Allow; 6]),
            (
                "owner, read-only key",
                caller(false, owner, READ_ONLY),
                [Allow, Allow, f, f, f, f],
            ),
            (
                "admin, read-only key",
                caller(true, None, READ_ONLY),
                [Allow, Allow, f, f, Allow, f],
            ),
            (
                "owner, key for elsewhere",
                caller(false, owner, ELSEWHERE),
                [Allow, f, f, f, f, f],
            ),
            (
                "admin, key for elsewhere",
                caller(true, None, ELSEWHERE),
                [Allow, f, f, f, f, f],
            ),
        ];
        for (who, caller, [read_public, read_private, write, manage, inspect, repair]) in rows {
            assert_eq!(decide(Action::Read, false, caller), read_public, "{who}");
            assert_eq!(decide(Action::Read, true, caller), read_private, "{who}");
            assert_eq!(hidden(true, caller), read_private != Allow, "{who}");
            assert!(!hidden(false, caller), "{who}");
            for private in [false, true] {
                assert_eq!(decide(Action::Write, private, caller), write, "{who}");
                assert_eq!(decide(Action::Manage, private, caller), manage, "{who}");
                assert_eq!(decide(Action::Inspect, private, caller), inspect, "{who}");
                assert_eq!(decide(Action::Repair, private, caller), repair, "{who}");
            }
        }
    }

    #[test]
    fn a_listing_shows_what_its_reader_may_read() {
        let team = ["team".to_owned()];
        let plain = |is_admin| KeyHolder {
            is_admin,
            read_only: false,
            channels: None,
        };
        let for_team = |is_admin| KeyHolder {
            is_admin,
            read_only: true,
            channels: Some(&team),
        };
        let member = Some(Role::Member);
        // (who, holder, role in both channels, sees: public "open", private "team", private "other")
        let rows = [
            ("anonymous", None, None, [true, false, false]),
            ("no role", Some(plain(false)), None, [true, false, false]),
            ("member", Some(plain(false)), member, [true, true, true]),
            ("admin", Some(plain(true)), None, [true, true, true]),
            (
                "member, key for team",
                Some(for_team(false)),
                member,
                [true, true, false],
            ),
            (
                "admin, key for team",
                Some(for_team(true)),
                None,
                [true, true, false],
            ),
        ];
        for (who, holder, role, [open, team, other]) in rows {
            let holder = holder.as_ref();
            assert_eq!(listed(holder, "open", false, role), open, "{who}");
            assert_eq!(listed(holder, "team", true, role), team, "{who}");
            assert_eq!(listed(holder, "other", true, role), other, "{who}");
        }
    }

    #[test]
    fn only_a_key_without_limits_manages_the_account() {
        let team = ["team".to_owned()];
        let holder = |read_only, channels| KeyHolder {
            is_admin: true,
            read_only,
            channels,
        };
        assert!(holder(false, None).may_manage_account());
        assert!(!holder(true, None).may_manage_account());
        assert!(!holder(false, Some(&team[..])).may_manage_account());
    }
}
