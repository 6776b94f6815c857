//! The retainer ledger as a pure function: a partner's credit position and one operation in, the
//! new position and the double-entry transfers out, or a refusal that changes nothing. The
//! service stores the transfers and the position in PostgreSQL; this module decides.
//!
//! Units are whole minutes of investigation. Accounts: each partner has one retainer account;
//! the operator has three (issued, consumed, expired). Every transfer debits one account and
//! credits another by the same positive amount, so debits equal credits by construction:
//!
//! - a purchase moves credits from *issued* to the partner's *retainer*;
//! - work moves them from the *retainer* to *consumed*, oldest pack first (one transfer per pack
//!   it draws on, and one for what it takes beyond every pack, within the overdraft limit);
//! - a hold reserves credits as a *pending* retainer-to-consumed transfer; work of its engagement
//!   uses the reservation (the used part of the pending transfer is posted, as the work's own
//!   debits), and closing, voiding or the hold's expiry releases the rest;
//! - a pack that reaches the end of its validity moves what is left from the *retainer* to
//!   *expired*.
//!
//! Packs are the retainer's sub-ledger: the retainer's balance always equals the packs' remaining
//! credits minus what is overdrawn, and a purchase first settles what was overdrawn.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub type Minutes = i64;

/// One of the ledger's accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Account {
    /// The partner's retainer.
    Retainer,
    /// The operator's account debited when credits are issued.
    Issued,
    /// The operator's account credited when credits are used.
    Consumed,
    /// The operator's account credited when credits expire unused.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Purchase,
    /// Pending: credits reserved by a hold.
    Hold,
    /// Pending: the part of a hold that work used, now posted by the work's own debits.
    HoldPost,
    /// Pending: the part of a hold released when it was voided, or left when it was closed.
    HoldVoid,
    /// Pending: the part of a hold released when it lapsed.
    HoldExpire,
    WorkDebit,
    Expiry,
}

impl TransferKind {
    /// Every kind, for parsing and filters.
    pub const ALL: [TransferKind; 7] = [
        TransferKind::Purchase,
        TransferKind::Hold,
        TransferKind::HoldPost,
        TransferKind::HoldVoid,
        TransferKind::HoldExpire,
        TransferKind::WorkDebit,
        TransferKind::Expiry,
    ];

    /// The kind as stored.
    pub fn name(self) -> &'static str {
        match self {
            TransferKind::Purchase => "purchase",
            TransferKind::Hold => "hold",
            TransferKind::HoldPost => "hold_post",
            TransferKind::HoldVoid => "hold_void",
            TransferKind::HoldExpire => "hold_expire",
            TransferKind::WorkDebit => "work_debit",
            TransferKind::Expiry => "expiry",
        }
    }
}

impl TryFrom<String> for TransferKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        TransferKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown transfer kind {name}"))
    }
}

/// A movement of credits the operation makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub kind: TransferKind,
    pub debit: Account,
    pub credit: Account,
    pub amount: Minutes,
    /// Pending transfers (holds) reserve credits without moving them.
    pub pending: bool,
    pub pack_id: Option<Uuid>,
    pub hold_id: Option<Uuid>,
}

/// A pack of credits the partner bought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    pub id: Uuid,
    pub purchased: Minutes,
    pub remaining: Minutes,
    pub used: Minutes,
    pub expired: Minutes,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum HoldState {
    Pending,
    /// Closed by its engagement or posted: what work did not use was released.
    Closed,
    Voided,
    Expired,
}

impl HoldState {
    /// The state as stored.
    pub fn name(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Closed => "closed",
            HoldState::Voided => "voided",
            HoldState::Expired => "expired",
        }
    }
}

impl TryFrom<String> for HoldState {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        [
            HoldState::Pending,
            HoldState::Closed,
            HoldState::Voided,
            HoldState::Expired,
        ]
        .into_iter()
        .find(|state| state.name() == name)
        .ok_or_else(|| format!("unknown hold state {name}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: Uuid,
    pub amount: Minutes,
    /// Reserved minutes that work used.
    pub used: Minutes,
    pub state: HoldState,
    pub expires_at: DateTime<Utc>,
}

impl Hold {
    /// What it still reserves.
    pub fn reserved(&self) -> Minutes {
        match self.state {
            HoldState::Pending => self.amount - self.used,
            _ => 0,
        }
    }
}

/// A partner's credit position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retainer {
    /// Oldest first: work draws on them in this order.
    pub packs: Vec<Pack>,
    pub holds: BTreeMap<Uuid, Hold>,
    /// Minutes debited beyond every pack, within the overdraft limit.
    pub overdrawn: Minutes,
    /// How far below zero the available credits may go.
    pub overdraft_limit: Minutes,
}

impl Retainer {
    /// Credits left in the packs.
    pub fn remaining(&self) -> Minutes {
        self.packs.iter().map(|pack| pack.remaining).sum()
    }

    /// Credits reserved by pending holds.
    pub fn held(&self) -> Minutes {
        self.holds.values().map(Hold::reserved).sum()
    }

    /// Credits that may still be reserved or used (negative while overdrawn).
    pub fn available(&self) -> Minutes {
        self.remaining() - self.overdrawn - self.held()
    }

    /// The retainer account's balance: what its transfers sum to.
    pub fn balance(&self) -> Minutes {
        self.remaining() - self.overdrawn
    }
}

/// An operation on a retainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Purchase {
        pack_id: Uuid,
        minutes: Minutes,
        expires_at: DateTime<Utc>,
    },
    PlaceHold {
        hold_id: Uuid,
        minutes: Minutes,
        expires_at: DateTime<Utc>,
    },
    /// Work of `minutes`, using the reservation of `hold_id` first when given.
    Work {
        minutes: Minutes,
        hold_id: Option<Uuid>,
    },
    /// Releases what a hold still reserves, as `state` (closed, voided or expired).
    ReleaseHold { hold_id: Uuid, state: HoldState },
    /// Expires the packs whose validity ended by `now`, and the holds that lapsed.
    Expire { now: DateTime<Utc> },
}

/// Why an operation was refused; a refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("minutes: must be positive")]
    NotPositive,
    #[error("pack_id: pack {0} exists already")]
    PackExists(Uuid),
    #[error("hold_id: hold {0} exists already")]
    HoldExists(Uuid),
    #[error("hold_id: no hold {0}")]
    NoSuchHold(Uuid),
    #[error("hold_id: hold {0} is no longer pending")]
    HoldNotPending(Uuid),
    #[error(
        "minutes: {requested} minutes would leave {available} available, below the overdraft limit of {limit}"
    )]
    Insufficient {
        requested: Minutes,
        available: Minutes,
        limit: Minutes,
    },
}

fn transfer(kind: TransferKind, debit: Account, credit: Account, amount: Minutes) -> Transfer {
    Transfer {
        kind,
        debit,
        credit,
        amount,
        pending: false,
        pack_id: None,
        hold_id: None,
    }
}

/// Applies `operation` to `retainer`: the new position and the transfers it makes.
pub fn apply(
    retainer: &Retainer,
    operation: &Operation,
) -> Result<(Retainer, Vec<Transfer>), Refusal> {
    let mut next = retainer.clone();
    let mut transfers = Vec::new();
    match *operation {
        Operation::Purchase {
            pack_id,
            minutes,
            expires_at,
        } => {
            if minutes <= 0 {
                return Err(Refusal::NotPositive);
            }
            if next.packs.iter().any(|pack| pack.id == pack_id) {
                return Err(Refusal::PackExists(pack_id));
            }
            transfers.push(Transfer {
                pack_id: Some(pack_id),
                ..transfer(
                    TransferKind::Purchase,
                    Account::Issued,
                    Account::Retainer,
                    minutes,
                )
            });
            // What was overdrawn is paid from the new pack first.
            let settled = next.overdrawn.min(minutes);
            next.overdrawn -= settled;
            let pack = Pack {
                id: pack_id,
                purchased: minutes,
                remaining: minutes - settled,
                used: settled,
                expired: 0,
                expires_at,
            };
            let position = next
                .packs
                .iter()
                .position(|other| other.expires_at > expires_at)
                .unwrap_or(next.packs.len());
            next.packs.insert(position, pack);
        }
        Operation::PlaceHold {
            hold_id,
            minutes,
            expires_at,
        } => {
            if minutes <= 0 {
                return Err(Refusal::NotPositive);
            }
            if next.holds.contains_key(&hold_id) {
                return Err(Refusal::HoldExists(hold_id));
            }
            ensure_covered(&next, minutes)?;
            next.holds.insert(
                hold_id,
                Hold {
                    id: hold_id,
                    amount: minutes,
                    used: 0,
                    state: HoldState::Pending,
                    expires_at,
                },
            );
            transfers.push(Transfer {
                pending: true,
                hold_id: Some(hold_id),
                ..transfer(
                    TransferKind::Hold,
                    Account::Retainer,
                    Account::Consumed,
                    minutes,
                )
            });
        }
        Operation::Work { minutes, hold_id } => {
            if minutes <= 0 {
                return Err(Refusal::NotPositive);
            }
            let reserved = match hold_id {
                Some(hold_id) => {
                    let hold = next
                        .holds
                        .get(&hold_id)
                        .ok_or(Refusal::NoSuchHold(hold_id))?;
                    if hold.state != HoldState::Pending {
                        return Err(Refusal::HoldNotPending(hold_id));
                    }
                    hold.reserved().min(minutes)
                }
                None => 0,
            };
            // The reservation is the hold's own: only what work takes beyond it must be covered.
            ensure_covered(&next, minutes - reserved)?;
            if let Some(hold) = hold_id.and_then(|hold_id| next.holds.get_mut(&hold_id))
                && reserved > 0
            {
                hold.used += reserved;
                transfers.push(Transfer {
                    pending: true,
                    hold_id: Some(hold.id),
                    ..transfer(
                        TransferKind::HoldPost,
                        Account::Consumed,
                        Account::Retainer,
                        reserved,
                    )
                });
            }
            debit_oldest_first(&mut next, minutes, hold_id, &mut transfers);
        }
        Operation::ReleaseHold { hold_id, state } => {
            let hold = next
                .holds
                .get_mut(&hold_id)
                .ok_or(Refusal::NoSuchHold(hold_id))?;
            if hold.state != HoldState::Pending {
                return Err(Refusal::HoldNotPending(hold_id));
            }
            release(hold, state, &mut transfers);
        }
        Operation::Expire { now } => {
            for hold in next.holds.values_mut() {
                if hold.state == HoldState::Pending && hold.expires_at <= now {
                    release(hold, HoldState::Expired, &mut transfers);
                }
            }
            for pack in &mut next.packs {
                if pack.expires_at <= now && pack.remaining > 0 {
                    transfers.push(Transfer {
                        pack_id: Some(pack.id),
                        ..transfer(
                            TransferKind::Expiry,
                            Account::Retainer,
                            Account::Expired,
                            pack.remaining,
                        )
                    });
                    pack.expired += pack.remaining;
                    pack.remaining = 0;
                }
            }
        }
    }
    Ok((next, transfers))
}

/// Refuses a debit of `minutes` that would take the available credits below the overdraft limit.
fn ensure_covered(retainer: &Retainer, minutes: Minutes) -> Result<(), Refusal> {
    let available = retainer.available();
    if available - minutes < -retainer.overdraft_limit {
        return Err(Refusal::Insufficient {
            requested: minutes,
            available,
            limit: retainer.overdraft_limit,
        });
    }
    Ok(())
}

/// Debits `minutes` of work from the packs, oldest first, then from the overdraft.
fn debit_oldest_first(
    retainer: &mut Retainer,
    minutes: Minutes,
    hold_id: Option<Uuid>,
    transfers: &mut Vec<Transfer>,
) {
    let mut left = minutes;
    for pack in retainer.packs.iter_mut().filter(|pack| pack.remaining > 0) {
        if left == 0 {
            break;
        }
        let taken = pack.remaining.min(left);
        pack.remaining -= taken;
        pack.used += taken;
        left -= taken;
        transfers.push(Transfer {
            pack_id: Some(pack.id),
            hold_id,
            ..transfer(
                TransferKind::WorkDebit,
                Account::Retainer,
                Account::Consumed,
                taken,
            )
        });
    }
    if left > 0 {
        retainer.overdrawn += left;
        transfers.push(Transfer {
            hold_id,
            ..transfer(
                TransferKind::WorkDebit,
                Account::Retainer,
                Account::Consumed,
                left,
            )
        });
    }
}

/// Ends a pending hold as `state`, releasing what it still reserves.
fn release(hold: &mut Hold, state: HoldState, transfers: &mut Vec<Transfer>) {
    let reserved = hold.reserved();
    hold.state = state;
    if reserved > 0 {
        transfers.push(Transfer {
            pending: true,
            hold_id: Some(hold.id),
            ..transfer(
                if state == HoldState::Expired {
                    TransferKind::HoldExpire
                } else {
                    TransferKind::HoldVoid
                },
                Account::Consumed,
                Account::Retainer,
                reserved,
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000 + day * 86_400, 0).expect("valid time")
    }

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    #[test]
    fn work_draws_on_the_oldest_pack_first_then_the_overdraft() {
        let retainer = Retainer {
            overdraft_limit: 30,
            ..Retainer::default()
        };
        let (retainer, _) = apply(
            &retainer,
            &Operation::Purchase {
                pack_id: id(2),
                minutes: 120,
                expires_at: at(365),
            },
        )
        .expect("bought");
        let (retainer, _) = apply(
            &retainer,
            &Operation::Purchase {
                pack_id: id(1),
                minutes: 60,
                expires_at: at(30),
            },
        )
        .expect("bought");
        let (retainer, transfers) = apply(
            &retainer,
            &Operation::Work {
                minutes: 200,
                hold_id: None,
            },
        )
        .expect("within the overdraft");
        let drawn: Vec<(Option<Uuid>, Minutes)> = transfers
            .iter()
            .map(|transfer| (transfer.pack_id, transfer.amount))
            .collect();
        assert_eq!(drawn, [(Some(id(1)), 60), (Some(id(2)), 120), (None, 20)]);
        assert_eq!(retainer.overdrawn, 20);
        assert_eq!(retainer.available(), -20);
        let refused = apply(
            &retainer,
            &Operation::Work {
                minutes: 11,
                hold_id: None,
            },
        );
        assert_eq!(
            refused,
            Err(Refusal::Insufficient {
                requested: 11,
                available: -20,
                limit: 30
            })
        );
        // A new pack settles the overdraft first.
        let (retainer, _) = apply(
            &retainer,
            &Operation::Purchase {
                pack_id: id(3),
                minutes: 50,
                expires_at: at(400),
            },
        )
        .expect("bought");
        assert_eq!(retainer.overdrawn, 0);
        assert_eq!(retainer.available(), 30);
    }

    #[test]
    fn a_hold_reserves_work_uses_it_and_closing_releases_the_rest() {
        let (retainer, _) = apply(
            &Retainer::default(),
            &Operation::Purchase {
                pack_id: id(1),
                minutes: 100,
                expires_at: at(365),
            },
        )
        .expect("bought");
        let (retainer, _) = apply(
            &retainer,
            &Operation::PlaceHold {
                hold_id: id(9),
                minutes: 80,
                expires_at: at(7),
            },
        )
        .expect("held");
        assert_eq!(retainer.available(), 20);
        assert!(matches!(
            apply(
                &retainer,
                &Operation::Work {
                    minutes: 21,
                    hold_id: None
                }
            ),
            Err(Refusal::Insufficient { .. })
        ));
        let (retainer, _) = apply(
            &retainer,
            &Operation::Work {
                minutes: 50,
                hold_id: Some(id(9)),
            },
        )
        .expect("work of the engagement");
        assert_eq!(retainer.available(), 20, "the reservation paid for it");
        let (retainer, transfers) = apply(
            &retainer,
            &Operation::ReleaseHold {
                hold_id: id(9),
                state: HoldState::Closed,
            },
        )
        .expect("closed");
        assert_eq!(transfers[0].amount, 30);
        assert_eq!(retainer.available(), 50);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Purchase {
            minutes: Minutes,
            days: i64,
        },
        Hold {
            minutes: Minutes,
            days: i64,
        },
        Work {
            minutes: Minutes,
            hold: Option<usize>,
        },
        Release {
            hold: usize,
            state: u8,
        },
        Expire {
            days: i64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..300i64, 1..400i64).prop_map(|(minutes, days)| Step::Purchase { minutes, days }),
            (1..200i64, 1..30i64).prop_map(|(minutes, days)| Step::Hold { minutes, days }),
            (1..200i64, proptest::option::of(0..8usize))
                .prop_map(|(minutes, hold)| Step::Work { minutes, hold }),
            (0..8usize, 0..3u8).prop_map(|(hold, state)| Step::Release { hold, state }),
            (0..400i64).prop_map(|days| Step::Expire { days }),
        ]
    }

    proptest! {
        /// After any sequence: debits equal credits, the retainer's balance is what its transfers
        /// sum to, every pack adds up, no debit took the available credits below the overdraft
        /// limit, and a refusal changed nothing.
        #[test]
        fn the_books_always_balance(
            limit in 0..120i64,
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let mut retainer = Retainer { overdraft_limit: limit, ..Retainer::default() };
            let mut holds: Vec<Uuid> = Vec::new();
            let mut posted: HashMap<Account, (Minutes, Minutes)> = HashMap::new();
            let mut pending_retainer: Minutes = 0;
            let mut now_days = 0;
            for (index, step) in steps.into_iter().enumerate() {
                let fresh = Uuid::from_u128(index as u128 + 1);
                let operation = match step {
                    Step::Purchase { minutes, days } => Operation::Purchase {
                        pack_id: fresh, minutes, expires_at: at(now_days + days),
                    },
                    Step::Hold { minutes, days } => {
                        holds.push(fresh);
                        Operation::PlaceHold { hold_id: fresh, minutes, expires_at: at(now_days + days) }
                    }
                    Step::Work { minutes, hold } => Operation::Work {
                        minutes, hold_id: hold.and_then(|hold| holds.get(hold).copied()),
                    },
                    Step::Release { hold, state } => match holds.get(hold) {
                        Some(hold_id) => Operation::ReleaseHold {
                            hold_id: *hold_id,
                            state: [HoldState::Closed, HoldState::Voided, HoldState::Expired][state as usize],
                        },
                        None => continue,
                    },
                    Step::Expire { days } => {
                        now_days += days;
                        Operation::Expire { now: at(now_days) }
                    }
                };
                let user_debit = matches!(operation, Operation::PlaceHold { .. } | Operation::Work { .. });
                // A refusal returns the position untouched: only an accepted operation moves on.
                if let Ok((next, transfers)) = apply(&retainer, &operation) {
                    for transfer in &transfers {
                        prop_assert!(transfer.amount > 0);
                        prop_assert_ne!(transfer.debit, transfer.credit);
                        if transfer.pending {
                            // Holds reserve on the retainer and releases give it back.
                            if transfer.debit == Account::Retainer { pending_retainer += transfer.amount }
                            else { pending_retainer -= transfer.amount }
                        } else {
                            posted.entry(transfer.debit).or_default().0 += transfer.amount;
                            posted.entry(transfer.credit).or_default().1 += transfer.amount;
                        }
                    }
                    if user_debit {
                        prop_assert!(next.available() >= -next.overdraft_limit);
                    }
                    retainer = next;
                }
                let debits: Minutes = posted.values().map(|(debits, _)| debits).sum();
                let credits: Minutes = posted.values().map(|(_, credits)| credits).sum();
                prop_assert_eq!(debits, credits);
                let (retainer_debits, retainer_credits) =
                    posted.get(&Account::Retainer).copied().unwrap_or_default();
                prop_assert_eq!(retainer_credits - retainer_debits, retainer.balance());
                prop_assert_eq!(pending_retainer, retainer.held());
                prop_assert!(retainer.overdrawn >= 0);
                for pack in &retainer.packs {
                    prop_assert!(pack.remaining >= 0);
                    prop_assert_eq!(pack.purchased, pack.remaining + pack.used + pack.expired);
                }
                for pair in retainer.packs.windows(2) {
                    prop_assert!(pair[0].expires_at <= pair[1].expires_at, "oldest first");
                }
                let (_, consumed_credits) = posted.get(&Account::Consumed).copied().unwrap_or_default();
                let used: Minutes = retainer.packs.iter().map(|pack| pack.used).sum();
                prop_assert_eq!(consumed_credits, used + retainer.overdrawn);
            }
        }

        /// A refused operation leaves the position as it was.
        #[test]
        fn a_refusal_changes_nothing(minutes in 1..500i64, limit in 0..100i64) {
            let (retainer, _) = apply(
                &Retainer { overdraft_limit: limit, ..Retainer::default() },
                &Operation::Purchase { pack_id: id(1), minutes: 100, expires_at: at(365) },
            ).expect("bought");
            let work = Operation::Work { minutes, hold_id: None };
            match apply(&retainer, &work) {
                Ok((next, _)) => prop_assert!(minutes <= 100 + limit && next.available() == 100 - minutes),
                Err(refusal) => {
                    prop_assert!(minutes > 100 + limit);
                    let insufficient = matches!(refusal, Refusal::Insufficient { .. });
                    prop_assert!(insufficient);
                }
            }
        }
    }
}
