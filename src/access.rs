//! Who may do what on a channel. Every route asks [`decide`]; nothing else grants access.
//!
//! | caller                     | read public | read private | write (upload, delete) |
//! |----------------------------|-------------|--------------|------------------------|
//! | anonymous                  | yes         | 401          | 401                    |
//! | signed in, no role         | yes         | 403          | 403                    |
//! | member                     | yes         | yes          | 403                    |
//! | owner                      | yes         | yes          | yes                    |
//! | site admin                 | yes         | yes          | yes                    |
//!
//! Credentials that are present but invalid are refused with 401 before this table applies.

/// A user's role in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "owner" => Some(Self::Owner),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
}

/// A signed-in caller as seen by one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub is_admin: bool,
    pub role: Option<Role>,
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
    let Some(caller) = caller else {
        return match (action, private) {
            (Action::Read, false) => Decision::Allow,
            _ => Decision::Unauthenticated,
        };
    };
    let allowed = caller.is_admin
        || match action {
            Action::Read => !private || caller.role.is_some(),
            Action::Write => caller.role == Some(Role::Owner),
        };
    if allowed {
        Decision::Allow
    } else {
        Decision::Forbidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANON: Option<Caller> = None;
    const NOBODY: Option<Caller> = Some(Caller {
        is_admin: false,
        role: None,
    });
    const MEMBER: Option<Caller> = Some(Caller {
        is_admin: false,
        role: Some(Role::Member),
    });
    const OWNER: Option<Caller> = Some(Caller {
        is_admin: false,
        role: Some(Role::Owner),
    });
    const ADMIN: Option<Caller> = Some(Caller {
        is_admin: true,
        role: None,
    });

    #[test]
    fn the_policy_table() {
        use Decision::*;
        let rows = [
            (ANON, [Allow, Unauthenticated, Unauthenticated]),
            (NOBODY, [Allow, Forbidden, Forbidden]),
            (MEMBER, [Allow, Allow, Forbidden]),
            (OWNER, [Allow, Allow, Allow]),
            (ADMIN, [Allow, Allow, Allow]),
        ];
        for (caller, [read_public, read_private, write]) in rows {
            assert_eq!(
                decide(Action::Read, false, caller),
                read_public,
                "{caller:?}"
            );
            assert_eq!(
                decide(Action::Read, true, caller),
                read_private,
                "{caller:?}"
            );
            assert_eq!(decide(Action::Write, false, caller), write, "{caller:?}");
            assert_eq!(decide(Action::Write, true, caller), write, "{caller:?}");
        }
    }
}
