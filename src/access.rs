//! Who may do what on a channel. Every route asks [`decide`] (listings through [`listed`]);
//! nothing else grants access.
//!
//! | caller             | read public | read private | upload | delete, replace | manage (members, settings, publishers) | inspect (stats, check) | repair (rebuild, check and repair) |
//! |--------------------|-------------|--------------|--------|-----------------|----------------------------------------|------------------------|------------------------------------|
//! | anonymous          | yes         | 401          | 401    | 401             | 401                                    | 401                    | 401                                |
//! | signed in, no role | yes         | 403          | 403    | 403             | 403                                    | 403                    | 403                                |
//! | member             | yes         | yes          | 403    | 403             | 403                                    | 403                    | 403                                |
//! | contributor        | yes         | yes          | yes    | yes             | 403                                    | 403                    | 403                                |
//! | owner              | yes         | yes          | yes    | yes             | yes                                    | 403                    | 403                                |
//! | site admin         | yes         | yes          | yes    | yes             | yes                                    | yes                    | yes                                |
//! | key minted for a trusted publisher of the channel | yes | yes | yes | 403 | 403                     | 403                    | 403                                |
//!
//! A key's scope narrows its user's rights, never widens them, a site admin's included: a
//! read-only key reads and inspects only, and a key limited to some channels acts as
//! signed-in-without-a-role everywhere else. A key minted for trusted publishers
//! (`POST /api/oidc/mint_token`) is a contributor on its publishers' channels by virtue of them,
//! whatever its user's roles, and its scope allows reading and uploading only; elsewhere it is
//! signed in without a role. Credentials that are present but invalid, expired
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
    /// Uploading packages (and prefix.dev's reindex).
    Write,
    /// Deleting a package, or replacing one with other bytes (`?force`).
    Delete,
    /// Members, visibility, deleting the channel.
    Manage,
    /// What the server knows of a channel's index (stats, the consistency check): site admins.
    Inspect,
    /// Rebuilding a channel's index, or repairing what the check found: site admins.
    Repair,
}

impl Action {
    /// What an upload asks for: with `force` it may replace a file, deleting the old bytes.
    pub fn upload(force: bool) -> Self {
        if force {
            Self::Delete
        } else {
            Self::Write
        }
    }

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
    /// The key was minted for a trusted publisher: it reads and uploads, nothing more.
    pub uploads_only: bool,
}

impl KeyScope {
    pub const FULL: KeyScope = KeyScope {
        read_only: false,
        covers_channel: true,
        uploads_only: false,
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
    } else if (caller.scope.read_only && action.changes())
        || (caller.scope.uploads_only && !matches!(action, Action::Read | Action::Write))
    {
        false
    } else {
        caller.is_admin
            || match action {
                Action::Read => !private || caller.role.is_some(),
                Action::Write | Action::Delete => {
                    matches!(caller.role, Some(Role::Owner | Role::Contributor))
                }
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
    /// The channels the key is limited to; `None`: no limit. For a minted key, the channels of
    /// the publishers it was minted for that are still registered.
    pub channels: Option<&'a [String]>,
    /// The key was minted for trusted publishers.
    pub minted: bool,
}

impl KeyHolder<'_> {
    /// The holder as `channel` sees them, where their user has `role`. A minted key is a
    /// contributor on its channels whatever its user's role, and never a site admin.
    pub fn on(&self, channel: &str, role: Option<Role>) -> Caller {
        let covers_channel = self.reaches(channel);
        if self.minted {
            return Caller {
                is_admin: false,
                role: covers_channel.then_some(Role::Contributor),
                scope: KeyScope {
                    read_only: false,
                    covers_channel,
                    uploads_only: true,
                },
            };
        }
        Caller {
            is_admin: self.is_admin,
            role,
            scope: KeyScope {
                read_only: self.read_only,
                covers_channel,
                uploads_only: false,
            },
        }
    }

    /// Whether what the holder may do on a channel depends on their user's role in it: not for
    /// a site admin, who may do anything anyway, nor for a minted key, whose role is its
    /// publishers'.
    pub fn role_matters(&self) -> bool {
        !self.is_admin && !self.minted
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
        uploads_only: false,
    };
    const ELSEWHERE: KeyScope = KeyScope {
        read_only: false,
        covers_channel: false,
        uploads_only: false,
    };

    /// A key minted for a publisher of channel "team", of a user with `role` there.
    fn minted(is_admin: bool, channel: &str, role: Option<Role>) -> Option<Caller> {
        let team = ["team".to_owned()];
        let holder = KeyHolder {
            is_admin,
            read_only: false,
            channels: Some(&team),
            minted: true,
        };
        assert!(!holder.role_matters());
        Some(holder.on(channel, role))
    }

    #[test]
    fn the_policy_table() {
        use Decision::*;
        let owner = Some(Role::Owner);
        let (u, f) = (Unauthenticated, Forbidden);
        // (who, caller, [read public, read private, write, delete, manage, inspect, repair])
        let rows = [
            ("anonymous", None, [Allow, u, u, u, u, u, u]),
            (
                "no role",
                caller(false, None, KeyScope::FULL),
                [Allow, f, f, f, f, f, f],
            ),
            (
                "member",
                caller(false, Some(Role::Member), KeyScope::FULL),
                [Allow, Allow, f, f, f, f, f],
            ),
            (
                "contributor",
                caller(false, Some(Role::Contributor), KeyScope::FULL),
                [Allow, Allow, Allow, Allow, f, f, f],
            ),
            (
                "contributor, read-only key",
                caller(false, Some(Role::Contributor), READ_ONLY),
                [Allow, Allow, f, f, f, f, f],
            ),
            (
                "owner",
                caller(false, owner, KeyScope::FULL),
                [Allow, Allow, Allow, Allow, Allow, f, f],
            ),
            ("admin", caller(true, None, KeyScope::FULL), [Allow; 7]),
            (
                "owner, read-only key",
                caller(false, owner, READ_ONLY),
                [Allow, Allow, f, f, f, f, f],
            ),
            (
                "admin, read-only key",
                caller(true, None, READ_ONLY),
                [Allow, Allow, f, f, f, Allow, f],
            ),
            (
                "owner, key for elsewhere",
                caller(false, owner, ELSEWHERE),
                [Allow, f, f, f, f, f, f],
            ),
            (
                "admin, key for elsewhere",
                caller(true, None, ELSEWHERE),
                [Allow, f, f, f, f, f, f],
            ),
            (
                "minted key, its publisher's channel",
                minted(false, "team", None),
                [Allow, Allow, Allow, f, f, f, f],
            ),
            (
                "minted key of an owner, its publisher's channel",
                minted(false, "team", owner),
                [Allow, Allow, Allow, f, f, f, f],
            ),
            (
                "minted key of an admin, its publisher's channel",
                minted(true, "team", None),
                [Allow, Allow, Allow, f, f, f, f],
            ),
            (
                "minted key of an owner, another channel",
                minted(false, "other", owner),
                [Allow, f, f, f, f, f, f],
            ),
            (
                "minted key of an admin, another channel",
                minted(true, "other", None),
                [Allow, f, f, f, f, f, f],
            ),
        ];
        for (who, caller, [read_public, read_private, write, delete, manage, inspect, repair]) in
            rows
        {
            assert_eq!(decide(Action::Read, false, caller), read_public, "{who}");
            assert_eq!(decide(Action::Read, true, caller), read_private, "{who}");
            assert_eq!(hidden(true, caller), read_private != Allow, "{who}");
            assert!(!hidden(false, caller), "{who}");
            for private in [false, true] {
                assert_eq!(decide(Action::Write, private, caller), write, "{who}");
                assert_eq!(decide(Action::Delete, private, caller), delete, "{who}");
                assert_eq!(decide(Action::Manage, private, caller), manage, "{who}");
                assert_eq!(decide(Action::Inspect, private, caller), inspect, "{who}");
                assert_eq!(decide(Action::Repair, private, caller), repair, "{who}");
            }
        }
    }

    #[test]
    fn a_forced_upload_needs_the_right_to_delete() {
        assert_eq!(Action::upload(false), Action::Write);
        assert_eq!(Action::upload(true), Action::Delete);
        let contributor = caller(false, Some(Role::Contributor), KeyScope::FULL);
        for force in [false, true] {
            assert_eq!(
                decide(Action::upload(force), true, contributor),
                Decision::Allow
            );
        }
        let minted = minted(false, "team", None);
        assert_eq!(decide(Action::upload(false), true, minted), Decision::Allow);
        assert_eq!(
            decide(Action::upload(true), true, minted),
            Decision::Forbidden
        );
    }

    #[test]
    fn a_listing_shows_what_its_reader_may_read() {
        let team = ["team".to_owned()];
        let plain = |is_admin| KeyHolder {
            is_admin,
            read_only: false,
            channels: None,
            minted: false,
        };
        let for_team = |is_admin| KeyHolder {
            is_admin,
            read_only: true,
            channels: Some(&team),
            minted: false,
        };
        let minted = KeyHolder {
            minted: true,
            ..for_team(true)
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
            (
                "admin, key minted for team",
                Some(minted),
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
            minted: false,
        };
        assert!(holder(false, None).may_manage_account());
        assert!(!holder(true, None).may_manage_account());
        assert!(!holder(false, Some(&team[..])).may_manage_account());
        let minted = KeyHolder {
            minted: true,
            ..holder(false, Some(&team[..]))
        };
        assert!(!minted.may_manage_account());
    }
}
