//! Every credit-moving call is a [`Command`] applied through one group commit, as TigerBeetle
//! batches transfers: the applier takes whatever calls have gathered, locks their partners'
//! positions in one statement, reads packs, holds, engagements and keys in a few more, runs each
//! call in memory through the engine, and writes what changed in one statement per table. A call
//! that is refused leaves its partner exactly as it found it, so a refusal writes nothing, and
//! the calls of one batch commit together, each answered only once they are durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use picket_platform::EventFactory;
use picket_platform::db::group_commit::{BatchApplier, GroupCommit};
use picket_platform::nats::OutgoingEvent;
use picket_platform::time::to_timestamp;
use picket_proto::Event;
use picket_proto::common::v1 as common;
use picket_proto::ledger::v1 as ledger;
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::engagements::{EngagementRow, Recommendation};
use crate::engine::{self, Hold, HoldState, Operation, Pack, Refusal, Retainer, TransferKind};
use crate::store::{self, HoldRecord, KeyRow, PackRow, RetainerRow, TransferRecord, WorkEntryRow};
use crate::{api, engagement_api};

/// A credit-moving call, checked and ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub partner_id: String,
    /// The caller's idempotency key; empty for the ledger's own expiry sweep.
    pub key: String,
    pub operation: &'static str,
    pub request_sha256: Vec<u8>,
    pub actor: common::Principal,
    pub action: Action,
    /// The span the call came in on: the events it causes continue that trace, whichever batch
    /// applies it.
    pub span: tracing::Span,
}

/// What a command does, with what its handler parsed from the request.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Purchase {
        request: ledger::PurchaseCreditsRequest,
        valid_from: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    PlaceHold {
        request: ledger::PlaceHoldRequest,
        engagement_id: Option<Uuid>,
        timeout: chrono::Duration,
    },
    PostHold {
        request: ledger::PostHoldRequest,
        hold_id: Uuid,
    },
    VoidHold {
        request: ledger::VoidHoldRequest,
        hold_id: Uuid,
    },
    SetTerms(ledger::SetCreditTermsRequest),
    OpenEngagement {
        request: ledger::OpenEngagementRequest,
        timeout: chrono::Duration,
    },
    AssignInvestigator {
        engagement_id: Uuid,
        investigator_subject: String,
    },
    LogWork {
        request: ledger::LogWorkRequest,
        engagement_id: Uuid,
        performed_at: Option<DateTime<Utc>>,
    },
    RecordRecommendations {
        engagement_id: Uuid,
        recommendations: Vec<Recommendation>,
    },
    CloseEngagement {
        engagement_id: Uuid,
        summary: String,
        recommendations: Vec<Recommendation>,
    },
    /// Expires what lapsed, which every command does first.
    Expire,
}

impl Action {
    /// The engagement the command works on.
    fn engagement_id(&self) -> Option<Uuid> {
        match self {
            Action::PlaceHold { engagement_id, .. } => *engagement_id,
            Action::AssignInvestigator { engagement_id, .. }
            | Action::LogWork { engagement_id, .. }
            | Action::RecordRecommendations { engagement_id, .. }
            | Action::CloseEngagement { engagement_id, .. } => Some(*engagement_id),
            _ => None,
        }
    }
}

/// A command's encoded answer, and whether it repeats the first call's.
pub(crate) struct Answer {
    pub response: Vec<u8>,
    pub replayed: bool,
}

pub(crate) type Commands = GroupCommit<Applier>;

pub(crate) struct Applier {
    pool: PgPool,
    events: EventFactory,
}

impl Applier {
    /// Starts the group commit that applies every credit-moving call.
    pub(crate) fn start(
        pool: PgPool,
        events: EventFactory,
        batch_size: usize,
        shutdown: CancellationToken,
    ) -> Commands {
        GroupCommit::start(Arc::new(Applier { pool, events }), batch_size, shutdown)
    }
}

impl BatchApplier for Applier {
    type Job = Command;
    type Outcome = Result<Answer, Status>;
    type Error = sqlx::Error;

    async fn apply(&self, commands: Vec<Command>) -> Result<Vec<Self::Outcome>, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let mut book = Book::load(&mut transaction, &commands).await?;
        let outcomes = commands
            .iter()
            .map(|command| book.run(command, &self.events))
            .collect();
        book.write(&mut transaction).await?;
        transaction.commit().await?;
        Ok(outcomes)
    }
}

/// A partner's position within a batch: as read under its lock, then as the batch's calls
/// changed it.
#[derive(Debug, Clone)]
pub(crate) struct Partner {
    pub row: RetainerRow,
    /// Oldest first.
    pub packs: Vec<PackRow>,
    /// Pending holds, and those the batch touched.
    pub holds: BTreeMap<Uuid, HoldRecord>,
    /// The engagements the batch's calls name.
    pub engagements: BTreeMap<Uuid, EngagementRow>,
    /// The keys of the batch's calls that were used already.
    pub keys: HashMap<String, KeyRow>,
}

impl Partner {
    fn new(row: RetainerRow) -> Partner {
        Partner {
            row,
            packs: Vec::new(),
            holds: BTreeMap::new(),
            engagements: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }

    /// Reads a partner's position without locking it (`None` before its first operation).
    pub(crate) async fn read(
        pool: &PgPool,
        partner_id: &str,
    ) -> Result<Option<Partner>, sqlx::Error> {
        let Some(row) = store::retainer(pool, partner_id).await? else {
            return Ok(None);
        };
        let partner_ids = [partner_id.to_owned()];
        let read = store::read(
            pool,
            &store::Wanted {
                partner_ids: &partner_ids,
                engagement_ids: &[],
                keys: (&[], &[]),
            },
        )
        .await?;
        let mut partner = Partner::new(row);
        partner.fill(partner_id, &read);
        Ok(Some(partner))
    }

    /// Takes the partner's rows of `read`.
    fn fill(&mut self, partner_id: &str, read: &store::Read) {
        let mine = |owner: &String| owner == partner_id;
        self.packs = read
            .packs
            .iter()
            .filter(|pack| mine(&pack.partner_id))
            .cloned()
            .collect();
        self.holds = read
            .holds
            .iter()
            .filter(|hold| mine(&hold.partner_id))
            .map(|hold| (hold.hold_id, hold.clone()))
            .collect();
        self.engagements = read
            .engagements
            .iter()
            .filter(|engagement| mine(&engagement.partner_id))
            .map(|engagement| (engagement.engagement_id, engagement.clone()))
            .collect();
        self.keys = read
            .keys
            .iter()
            .filter(|key| mine(&key.partner_id))
            .map(|key| (key.idempotency_key.clone(), key.clone()))
            .collect();
    }

    /// The engine's view of the position.
    pub(crate) fn position(&self) -> Retainer {
        Retainer {
            packs: self
                .packs
                .iter()
                .map(|pack| Pack {
                    id: pack.pack_id,
                    purchased: pack.purchased,
                    remaining: pack.remaining,
                    used: pack.used,
                    expired: pack.expired,
                    expires_at: pack.expires_at,
                })
                .collect(),
            holds: self
                .holds
                .values()
                .filter(|hold| hold.state == HoldState::Pending)
                .map(|hold| {
                    (
                        hold.hold_id,
                        Hold {
                            id: hold.hold_id,
                            amount: hold.amount,
                            used: hold.used,
                            state: hold.state,
                            expires_at: hold.expires_at,
                        },
                    )
                })
                .collect(),
            overdrawn: self.row.overdrawn,
            overdraft_limit: self.row.overdraft_limit,
        }
    }

    /// The partner's balance as the API shows it.
    pub(crate) fn balance(&self, now: DateTime<Utc>) -> ledger::Balance {
        api::balance_proto(
            &self.row.partner_id,
            Some(&self.row),
            &self.position(),
            &self.packs,
            now,
        )
    }
}

/// What a batch's calls recorded, in order.
#[derive(Default)]
struct Output {
    transfers: Vec<TransferRecord>,
    work_entries: Vec<WorkEntryRow>,
    events: Vec<OutgoingEvent>,
}

impl Output {
    fn marks(&self) -> [usize; 3] {
        [
            self.transfers.len(),
            self.work_entries.len(),
            self.events.len(),
        ]
    }

    fn truncate(&mut self, [transfers, work_entries, events]: [usize; 3]) {
        self.transfers.truncate(transfers);
        self.work_entries.truncate(work_entries);
        self.events.truncate(events);
    }
}

/// The positions a batch works on.
struct Book {
    partners: HashMap<String, Partner>,
    loaded: HashMap<String, Partner>,
    output: Output,
}

impl Book {
    async fn load(
        connection: &mut PgConnection,
        commands: &[Command],
    ) -> Result<Book, sqlx::Error> {
        let mut partner_ids: Vec<String> = commands
            .iter()
            .map(|command| command.partner_id.clone())
            .collect();
        partner_ids.sort();
        partner_ids.dedup();
        let mut partners: HashMap<String, Partner> = store::lock(connection, &partner_ids)
            .await?
            .into_iter()
            .map(|row| (row.partner_id.clone(), Partner::new(row)))
            .collect();
        let engagement_ids: Vec<Uuid> = commands
            .iter()
            .filter_map(|command| command.action.engagement_id())
            .collect();
        let keyed: Vec<&Command> = commands
            .iter()
            .filter(|command| !command.key.is_empty())
            .collect();
        let owners: Vec<&str> = keyed
            .iter()
            .map(|command| command.partner_id.as_str())
            .collect();
        let keys: Vec<&str> = keyed.iter().map(|command| command.key.as_str()).collect();
        let read = store::read(
            &mut *connection,
            &store::Wanted {
                partner_ids: &partner_ids,
                engagement_ids: &engagement_ids,
                keys: (&owners, &keys),
            },
        )
        .await?;
        for (partner_id, partner) in &mut partners {
            partner.fill(partner_id, &read);
        }
        Ok(Book {
            loaded: partners.clone(),
            partners,
            output: Output::default(),
        })
    }

    /// Runs one command: a retry gets the first answer; a refusal leaves everything as it was.
    fn run(&mut self, command: &Command, events: &EventFactory) -> Result<Answer, Status> {
        let Some(partner) = self.partners.get_mut(&command.partner_id) else {
            tracing::error!(partner_id = %command.partner_id, "a command's partner was not loaded");
            return Err(Status::internal("internal error"));
        };
        if let Some(used) = partner.keys.get(&command.key) {
            return if used.operation == command.operation
                && used.request_sha256 == command.request_sha256
            {
                Ok(Answer {
                    response: used.response.clone(),
                    replayed: true,
                })
            } else {
                Err(Status::invalid_argument(format!(
                    "idempotency_key: {} was used for another call or with other fields",
                    command.key
                )))
            };
        }
        let _entered = command.span.enter();
        let saved = partner.clone();
        let marks = self.output.marks();
        let now = Utc::now();
        let mut call = Call {
            partner: &mut *partner,
            output: &mut self.output,
            events,
            now,
            actor: &command.actor,
            key: &command.key,
        };
        match call.run(&command.action) {
            Ok(response) => {
                if !command.key.is_empty() {
                    partner.keys.insert(
                        command.key.clone(),
                        KeyRow {
                            partner_id: command.partner_id.clone(),
                            idempotency_key: command.key.clone(),
                            operation: command.operation.to_owned(),
                            request_sha256: command.request_sha256.clone(),
                            response: response.clone(),
                            created_at: now,
                        },
                    );
                }
                Ok(Answer {
                    response,
                    replayed: false,
                })
            }
            Err(status) => {
                *partner = saved;
                self.output.truncate(marks);
                Err(status)
            }
        }
    }

    /// Writes what the batch changed, and its events to the outbox.
    async fn write(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut changes = store::Changes {
            transfers: &self.output.transfers,
            work_entries: &self.output.work_entries,
            events: &self.output.events,
            ..Default::default()
        };
        for (partner_id, partner) in &self.partners {
            let loaded = &self.loaded[partner_id];
            if partner.row != loaded.row {
                changes.retainers.push(&partner.row);
            }
            changes.packs.extend(partner.packs.iter().filter(|pack| {
                loaded.packs.iter().find(|old| old.pack_id == pack.pack_id) != Some(*pack)
            }));
            changes.holds.extend(
                partner
                    .holds
                    .values()
                    .filter(|hold| loaded.holds.get(&hold.hold_id) != Some(*hold)),
            );
            changes
                .engagements
                .extend(partner.engagements.values().filter(|engagement| {
                    loaded.engagements.get(&engagement.engagement_id) != Some(*engagement)
                }));
            changes.keys.extend(
                partner
                    .keys
                    .values()
                    .filter(|key| !loaded.keys.contains_key(&key.idempotency_key)),
            );
        }
        store::write(connection, &changes).await
    }
}

/// What the engine does not know of the pack or hold an operation creates.
#[derive(Default)]
pub(crate) struct Created<'a> {
    pub pack: Option<NewPack<'a>>,
    pub hold: Option<NewHold<'a>>,
}

pub(crate) struct NewPack<'a> {
    pub valid_from: DateTime<Utc>,
    pub purchase_reference: &'a str,
    pub description: &'a str,
}

pub(crate) struct NewHold<'a> {
    pub engagement_id: Option<Uuid>,
    pub description: &'a str,
}

/// What a transfer is recorded against besides its pack and hold.
#[derive(Default, Clone, Copy)]
pub(crate) struct Links {
    pub engagement_id: Option<Uuid>,
    pub work_entry_id: Option<Uuid>,
}

/// One command at work on its partner's position.
pub(crate) struct Call<'a> {
    partner: &'a mut Partner,
    output: &'a mut Output,
    events: &'a EventFactory,
    pub now: DateTime<Utc>,
    pub actor: &'a common::Principal,
    key: &'a str,
}

/// Who expiries are recorded as.
const PICKET: (&str, i32) = ("picket", 0);

impl Call<'_> {
    /// Expires what lapsed, runs the action, and warns when it took the credits below the
    /// partner's threshold. Returns the encoded answer.
    fn run(&mut self, action: &Action) -> Result<Vec<u8>, Status> {
        let available_before = self.position().available();
        self.expire()?;
        let response = match action {
            Action::Purchase {
                request,
                valid_from,
                expires_at,
            } => api::purchase(self, request, *valid_from, *expires_at)?.encode_to_vec(),
            Action::PlaceHold {
                request,
                engagement_id,
                timeout,
            } => api::place_hold(self, request, *engagement_id, *timeout)?.encode_to_vec(),
            Action::PostHold { request, hold_id } => {
                api::post_hold(self, request, *hold_id)?.encode_to_vec()
            }
            Action::VoidHold { request, hold_id } => {
                api::void_hold(self, request, *hold_id)?.encode_to_vec()
            }
            Action::SetTerms(request) => api::set_terms(self, request).encode_to_vec(),
            Action::OpenEngagement { request, timeout } => {
                engagement_api::open(self, request, *timeout)?.encode_to_vec()
            }
            Action::AssignInvestigator {
                engagement_id,
                investigator_subject,
            } => {
                engagement_api::assign(self, *engagement_id, investigator_subject)?.encode_to_vec()
            }
            Action::LogWork {
                request,
                engagement_id,
                performed_at,
            } => engagement_api::log_work(self, request, *engagement_id, *performed_at)?
                .encode_to_vec(),
            Action::RecordRecommendations {
                engagement_id,
                recommendations,
            } => engagement_api::recommend(self, *engagement_id, recommendations)?.encode_to_vec(),
            Action::CloseEngagement {
                engagement_id,
                summary,
                recommendations,
            } => engagement_api::close(self, *engagement_id, summary, recommendations)?
                .encode_to_vec(),
            Action::Expire => Vec::new(),
        };
        self.warn_if_low(available_before)?;
        Ok(response)
    }

    pub(crate) fn position(&self) -> Retainer {
        self.partner.position()
    }

    pub(crate) fn balance(&self) -> ledger::Balance {
        self.partner.balance(self.now)
    }

    pub(crate) fn terms(&mut self) -> &mut RetainerRow {
        &mut self.partner.row
    }

    /// Applies `operation` by the caller and records its transfers.
    pub(crate) fn apply(
        &mut self,
        operation: &Operation,
        description: &str,
        created: &Created<'_>,
        links: Links,
    ) -> Result<Vec<TransferRecord>, Status> {
        let actor = (self.actor.subject.as_str(), self.actor.role);
        let key = self.key;
        self.record(operation, actor, key, description, created, links)
    }

    fn record(
        &mut self,
        operation: &Operation,
        (subject, role): (&str, i32),
        key: &str,
        description: &str,
        created: &Created<'_>,
        links: Links,
    ) -> Result<Vec<TransferRecord>, Status> {
        let (after, transfers) =
            engine::apply(&self.position(), operation).map_err(refusal_status)?;
        self.sync(&after, created, subject);
        let retainer = self.partner.row.account_id;
        let records: Vec<TransferRecord> = transfers
            .into_iter()
            .map(|transfer| TransferRecord {
                transfer_id: Uuid::now_v7(),
                partner_id: self.partner.row.partner_id.clone(),
                kind: transfer.kind,
                debit_account_id: store::account_id(transfer.debit, retainer),
                credit_account_id: store::account_id(transfer.credit, retainer),
                amount: transfer.amount,
                pending: transfer.pending,
                pack_id: transfer.pack_id,
                hold_id: transfer.hold_id,
                engagement_id: links.engagement_id,
                work_entry_id: links.work_entry_id,
                idempotency_key: key.to_owned(),
                description: description.to_owned(),
                actor_subject: subject.to_owned(),
                actor_role: role,
                created_at: self.now,
            })
            .collect();
        self.output.transfers.extend(records.iter().cloned());
        Ok(records)
    }

    /// Brings the partner's packs, holds and overdraft to the engine's `after`.
    fn sync(&mut self, after: &Retainer, created: &Created<'_>, actor: &str) {
        let partner = &mut *self.partner;
        for pack in &after.packs {
            match partner.packs.iter_mut().find(|row| row.pack_id == pack.id) {
                Some(row) => {
                    row.remaining = pack.remaining;
                    row.used = pack.used;
                    row.expired = pack.expired;
                }
                None => {
                    let details = created.pack.as_ref();
                    partner.packs.push(PackRow {
                        pack_id: pack.id,
                        partner_id: partner.row.partner_id.clone(),
                        purchased: pack.purchased,
                        remaining: pack.remaining,
                        used: pack.used,
                        expired: pack.expired,
                        purchased_at: self.now,
                        valid_from: details.map_or(self.now, |new| new.valid_from),
                        expires_at: pack.expires_at,
                        purchase_reference: details
                            .map_or("", |new| new.purchase_reference)
                            .to_owned(),
                        description: details.map_or("", |new| new.description).to_owned(),
                        issued_by: actor.to_owned(),
                    });
                    partner.packs.sort_by(|a, b| {
                        (a.expires_at, a.purchased_at, a.pack_id).cmp(&(
                            b.expires_at,
                            b.purchased_at,
                            b.pack_id,
                        ))
                    });
                }
            }
        }
        for hold in after.holds.values() {
            match partner.holds.get_mut(&hold.id) {
                Some(row) => {
                    row.used = hold.used;
                    if row.state != hold.state {
                        row.state = hold.state;
                        row.resolved_at = Some(self.now);
                    }
                }
                None => {
                    let details = created.hold.as_ref();
                    partner.holds.insert(
                        hold.id,
                        HoldRecord {
                            hold_id: hold.id,
                            partner_id: partner.row.partner_id.clone(),
                            engagement_id: details.and_then(|new| new.engagement_id),
                            amount: hold.amount,
                            used: hold.used,
                            state: hold.state,
                            created_at: self.now,
                            expires_at: hold.expires_at,
                            resolved_at: None,
                            description: details.map_or("", |new| new.description).to_owned(),
                            created_by: actor.to_owned(),
                        },
                    );
                }
            }
        }
        partner.row.overdrawn = after.overdrawn;
    }

    /// Expires the packs past their validity and the holds past their timeout; tells the partner
    /// of each pack that expired.
    fn expire(&mut self) -> Result<(), Status> {
        let transfers = self.record(
            &Operation::Expire { now: self.now },
            PICKET,
            "",
            "expired",
            &Created::default(),
            Links::default(),
        )?;
        let available = self.position().available();
        for transfer in transfers
            .iter()
            .filter(|transfer| transfer.kind == TransferKind::Expiry)
        {
            let expired_at = self
                .partner
                .packs
                .iter()
                .find(|pack| Some(pack.pack_id) == transfer.pack_id)
                .map_or(self.now, |pack| pack.expires_at);
            let expired = ledger::CreditsExpired {
                partner_id: transfer.partner_id.clone(),
                tenant_id: String::new(),
                pack_id: transfer
                    .pack_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                minutes: transfer.amount,
                expired_at: Some(to_timestamp(expired_at)),
                available_minutes: available,
                transfer_id: transfer.transfer_id.to_string(),
            };
            self.publish(&expired)?;
            tracing::info!(partner_id = %transfer.partner_id, minutes = transfer.amount, "credits expired");
        }
        Ok(())
    }

    /// Tells the partner once when its available credits fall below its threshold.
    fn warn_if_low(&mut self, available_before: i64) -> Result<(), Status> {
        let threshold = self.partner.row.low_balance_threshold;
        let balance = self.balance();
        if threshold == 0 || balance.available_minutes >= threshold || available_before < threshold
        {
            return Ok(());
        }
        let low = ledger::BalanceLow {
            partner_id: balance.partner_id.clone(),
            available_minutes: balance.available_minutes,
            threshold_minutes: threshold,
            held_minutes: balance.held_minutes,
            detected_at: Some(to_timestamp(self.now)),
            next_expiry_at: balance.next_expiry_at,
            overdraft_limit_minutes: balance.overdraft_limit_minutes,
            ..Default::default()
        };
        self.publish(&low)
    }

    /// Publishes `event` with the batch, through the outbox.
    pub(crate) fn publish(&mut self, event: &impl Event) -> Result<(), Status> {
        let event = self
            .events
            .event(event, self.now)
            .map_err(|error| Status::internal(error.to_string()))?;
        self.output.events.push(event);
        Ok(())
    }

    pub(crate) fn hold(&self, hold_id: Uuid) -> Result<ledger::Hold, Status> {
        self.partner
            .holds
            .get(&hold_id)
            .map(api::hold_proto)
            .ok_or_else(|| Status::not_found(format!("hold_id: no hold {hold_id}")))
    }

    /// What the hold `hold_id` still reserves (0 once it is no longer pending).
    pub(crate) fn reserved(&self, hold_id: Option<Uuid>) -> i64 {
        hold_id
            .and_then(|hold_id| self.partner.holds.get(&hold_id))
            .filter(|hold| hold.state == HoldState::Pending)
            .map_or(0, |hold| hold.amount - hold.used)
    }

    /// The partner's engagement `engagement_id`.
    pub(crate) fn engagement(&mut self, engagement_id: Uuid) -> Result<&mut EngagementRow, Status> {
        self.partner
            .engagements
            .get_mut(&engagement_id)
            .ok_or_else(|| {
                Status::not_found(format!("engagement_id: no engagement {engagement_id}"))
            })
    }

    /// Operators act on any engagement of the partner; an investigator only on the open engagement
    /// assigned to them.
    pub(crate) fn require_assigned(&mut self, engagement_id: Uuid) -> Result<(), Status> {
        let operator = self.actor.role == i32::from(common::Role::Operator);
        let subject = self.actor.subject.clone();
        let assigned = &self.open_engagement(engagement_id)?.investigator_subject;
        if operator || *assigned == subject {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "engagement_id: engagement {engagement_id} is not assigned to you"
        )))
    }

    /// The partner's engagement `engagement_id`, which must be open.
    pub(crate) fn open_engagement(
        &mut self,
        engagement_id: Uuid,
    ) -> Result<&mut EngagementRow, Status> {
        let engagement = self.engagement(engagement_id)?;
        if engagement.state != "open" {
            return Err(Status::failed_precondition(format!(
                "engagement_id: engagement {engagement_id} is closed"
            )));
        }
        Ok(engagement)
    }

    pub(crate) fn add_engagement(&mut self, engagement: EngagementRow) {
        self.partner
            .engagements
            .insert(engagement.engagement_id, engagement);
    }

    pub(crate) fn add_work_entry(&mut self, entry: WorkEntryRow) {
        self.output.work_entries.push(entry);
    }
}

pub(crate) fn refusal_status(refusal: Refusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        Refusal::NotPositive => Status::invalid_argument(message),
        Refusal::PackExists(_) | Refusal::HoldExists(_) => Status::already_exists(message),
        Refusal::NoSuchHold(_) => Status::not_found(message),
        Refusal::HoldNotPending(_) | Refusal::Insufficient { .. } => {
            Status::failed_precondition(message)
        }
    }
}

/// Expires lapsed packs and holds every `interval`, for partners no call touches meanwhile.
pub(crate) async fn sweep(
    pool: PgPool,
    commands: Commands,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let partner_ids = match store::lapsed(&pool, Utc::now()).await {
            Ok(partner_ids) => partner_ids,
            Err(error) => {
                tracing::warn!(%error, "could not find lapsed credits");
                continue;
            }
        };
        let expiries = partner_ids.into_iter().map(|partner_id| {
            commands.submit(Command {
                partner_id,
                key: String::new(),
                operation: "expire",
                request_sha256: Vec::new(),
                actor: common::Principal {
                    subject: PICKET.0.to_owned(),
                    ..Default::default()
                },
                action: Action::Expire,
                span: tracing::Span::current(),
            })
        });
        for outcome in futures::future::join_all(expiries).await {
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => tracing::warn!(%status, "an expiry was refused"),
                Err(error) => tracing::warn!(%error, "an expiry failed"),
            }
        }
    }
}
