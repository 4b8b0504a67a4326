//! Every transition and every refusal of the review state machine, plus a property test.

use super::*;
use crate::model::{Rule, RuleType};
use proptest::prelude::*;

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
}

fn rule(kind: RuleType, groups: &[&str], all: bool, amount: u32, force: &[&str]) -> Rule {
    Rule {
        id: Uuid::new_v4(),
        name: "r".into(),
        description: String::new(),
        kind,
        connections: vec!["pg".into()],
        required_groups: vec![],
        approval_groups: groups.iter().map(|s| s.to_string()).collect(),
        require_all_groups: all,
        approval_amount: amount,
        force_approval_groups: force.iter().map(|s| s.to_string()).collect(),
        exempt_groups: vec![],
        timeout_sec: Some(600),
        max_duration_sec: None,
        require_reason: false,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn review(r: &Rule) -> Review {
    Review::new(
        r,
        NewReview {
            id: uuid::Uuid::now_v7(),
            connection: "pg".into(),
            requester: "dev@x".into(),
            requester_groups: vec!["dev".into(), "dba".into()],
            command: (r.kind == RuleType::Command).then(|| "DELETE FROM t".to_string()),
            duration_sec: (r.kind == RuleType::Jit).then_some(3600),
            request_reason: None,
        },
        3600,
        t0(),
    )
}

struct P {
    email: &'static str,
    groups: Vec<String>,
    admin: bool,
}
fn p(email: &'static str, groups: &[&str]) -> P {
    P {
        email,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        admin: false,
    }
}
impl P {
    fn a(&self) -> Actor<'_> {
        Actor {
            email: self.email,
            groups: &self.groups,
            admin: self.admin,
            auditor: false,
        }
    }
}
fn ok() -> ApproveInput {
    ApproveInput::default()
}
fn force(reason: &str) -> ApproveInput {
    ApproveInput {
        force: true,
        reason: Some(reason.into()),
        duration_sec: None,
    }
}
fn later(s: i64) -> OffsetDateTime {
    t0() + Duration::seconds(s)
}

#[test]
fn new_review_records_hash_and_timeout() {
    let r = review(&rule(RuleType::Command, &["dba"], false, 1, &[]));
    assert_eq!(r.status, ReviewStatus::Pending);
    assert_eq!(
        r.command_sha256.as_deref(),
        Some(crate::command_sha256("DELETE FROM t").as_str())
    );
    assert_eq!(r.expires_at, later(600));
    let mut ru = rule(RuleType::Command, &["dba"], false, 1, &[]);
    ru.timeout_sec = None;
    assert_eq!(review(&ru).expires_at, later(3600));
}

#[test]
fn single_approval_approves() {
    let r = review(&rule(RuleType::Command, &["dba"], false, 1, &[]));
    let r = r
        .approve(p("alice@x", &["dba"]).a(), ok(), later(1))
        .unwrap();
    assert_eq!(r.status, ReviewStatus::Approved);
    assert_eq!(r.approvals[0].group, "dba");
    assert_eq!(r.decided_at, Some(later(1)));
    let r = r.mark_executed().unwrap();
    assert_eq!(r.status, ReviewStatus::Executed);
}

#[test]
fn approval_amount_counts_distinct_people() {
    let r = review(&rule(RuleType::Command, &["dba"], false, 2, &[]));
    let alice = p("alice@x", &["dba"]);
    let r = r.approve(alice.a(), ok(), later(1)).unwrap();
    assert_eq!(r.status, ReviewStatus::Pending);
    assert_eq!(
        r.clone().approve(alice.a(), ok(), later(2)).unwrap_err(),
        TransitionError::AlreadyApproved
    );
    let r = r.approve(p("bob@x", &["dba"]).a(), ok(), later(3)).unwrap();
    assert_eq!(r.status, ReviewStatus::Approved);
}

#[test]
fn require_all_groups_needs_one_person_per_group() {
    let ru = rule(RuleType::Command, &["dba", "sec"], true, 1, &[]);
    let both = p("carol@x", &["dba", "sec"]);
    let r = review(&ru).approve(both.a(), ok(), later(1)).unwrap();
    assert_eq!(
        r.status,
        ReviewStatus::Pending,
        "one person covers one group only"
    );
    let r = r.approve(p("dan@x", &["dba"]).a(), ok(), later(2)).unwrap();
    // carol can now be matched to sec and dan to dba, whatever the order of approvals.
    assert_eq!(r.status, ReviewStatus::Approved);
}

#[test]
fn require_all_groups_waits_for_the_missing_group() {
    let ru = rule(RuleType::Command, &["dba", "sec"], true, 1, &[]);
    let r = review(&ru)
        .approve(p("a@x", &["dba"]).a(), ok(), later(1))
        .unwrap()
        .approve(p("b@x", &["dba"]).a(), ok(), later(2))
        .unwrap();
    assert_eq!(r.status, ReviewStatus::Pending);
    assert!(
        r.progress().starts_with("2 of 2: dba ✓ sec …"),
        "{}",
        r.progress()
    );
    let r = r.approve(p("c@x", &["sec"]).a(), ok(), later(3)).unwrap();
    assert_eq!(r.status, ReviewStatus::Approved);
}

#[test]
fn refusals_leave_the_review_unchanged() {
    let ru = rule(RuleType::Command, &["dba"], false, 1, &["oncall"]);
    let r = review(&ru);
    // self approval (requester is even in dba)
    assert_eq!(
        r.clone()
            .approve(p("dev@x", &["dba"]).a(), ok(), later(1))
            .unwrap_err(),
        TransitionError::SelfApproval
    );
    // non eligible
    assert!(matches!(
        r.clone()
            .approve(p("eve@x", &["dev"]).a(), ok(), later(1))
            .unwrap_err(),
        TransitionError::NotEligible(_)
    ));
    // force without reason / force by non-member
    let no_reason = ApproveInput {
        force: true,
        reason: Some("  ".into()),
        duration_sec: None,
    };
    assert_eq!(
        r.clone()
            .approve(p("o@x", &["oncall"]).a(), no_reason, later(1))
            .unwrap_err(),
        TransitionError::ReasonRequired
    );
    assert_eq!(
        r.clone()
            .approve(p("a@x", &["dba"]).a(), force("x"), later(1))
            .unwrap_err(),
        TransitionError::NotForceMember
    );
    // reject without reason, reject by non-eligible, reject own
    assert_eq!(
        r.clone()
            .reject(p("a@x", &["dba"]).a(), None, later(1))
            .unwrap_err(),
        TransitionError::ReasonRequired
    );
    // A reason made only of invisible characters is no reason (issue 15).
    for invisible in [
        "\u{200b}\u{202e}",
        " \u{feff}\u{2066} ",
        "\u{e0041}\u{3164}",
    ] {
        assert_eq!(
            r.clone()
                .reject(p("a@x", &["dba"]).a(), Some(invisible), later(1))
                .unwrap_err(),
            TransitionError::ReasonRequired,
            "{invisible:?}"
        );
        let blank_force = ApproveInput {
            force: true,
            reason: Some(invisible.into()),
            duration_sec: None,
        };
        assert_eq!(
            r.clone()
                .approve(p("o@x", &["oncall"]).a(), blank_force, later(1))
                .unwrap_err(),
            TransitionError::ReasonRequired
        );
    }
    assert!(matches!(
        r.clone()
            .reject(p("e@x", &["dev"]).a(), Some("no"), later(1))
            .unwrap_err(),
        TransitionError::NotEligible(_)
    ));
    assert_eq!(
        r.clone()
            .reject(p("dev@x", &["dba"]).a(), Some("no"), later(1))
            .unwrap_err(),
        TransitionError::SelfRejection
    );
    // withdraw by someone else
    assert_eq!(
        r.clone()
            .withdraw(p("a@x", &["dba"]).a(), later(1))
            .unwrap_err(),
        TransitionError::NotRequester
    );
    // expire before the timeout
    assert_eq!(
        r.clone().expire(later(10)).unwrap_err(),
        TransitionError::WindowOpen
    );
    // revoke a command review
    assert_eq!(
        r.clone()
            .revoke(p("a@x", &["dba"]).a(), None, later(1))
            .unwrap_err(),
        TransitionError::NotJit
    );
    // execute before approval
    assert!(r.clone().mark_executed().is_err());
    assert_eq!(r, review(&ru).with_id(r.id, r.expires_at));
}

impl Review {
    fn with_id(mut self, id: Uuid, expires: OffsetDateTime) -> Review {
        self.id = id;
        self.expires_at = expires;
        self
    }
}

#[test]
fn force_approval_overrides_quorum_even_for_the_requester() {
    let ru = rule(RuleType::Command, &["dba", "sec"], true, 3, &["oncall"]);
    let me = p("dev@x", &["oncall"]);
    let r = review(&ru)
        .approve(me.a(), force("prod down"), later(1))
        .unwrap();
    assert_eq!(r.status, ReviewStatus::Approved);
    assert!(r.forced && r.approvals[0].forced);
    assert_eq!(r.reason.as_deref(), Some("prod down"));
}

#[test]
fn rejection_by_any_eligible_approver_rejects() {
    let ru = rule(RuleType::Command, &["dba", "sec"], true, 1, &[]);
    let r = review(&ru)
        .approve(p("a@x", &["dba"]).a(), ok(), later(1))
        .unwrap();
    let r = r
        .reject(p("s@x", &["sec"]).a(), Some("not today"), later(2))
        .unwrap();
    assert_eq!(r.status, ReviewStatus::Rejected);
    assert_eq!(r.decided_by.as_deref(), Some("s@x"));
    assert_eq!(r.reason.as_deref(), Some("not today"));
}

#[test]
fn withdraw_expire_and_terminal_conflicts() {
    let ru = rule(RuleType::Command, &["dba"], false, 1, &[]);
    let dev = p("dev@x", &["dev"]);
    let w = review(&ru).withdraw(dev.a(), later(1)).unwrap();
    assert_eq!(w.status, ReviewStatus::Rejected);
    assert_eq!(w.reason.as_deref(), Some("withdrawn by requester"));
    assert!(w.is_withdrawn());
    // Withdrawn on the requester's behalf (its client left): the reason says why.
    let gone = review(&ru).abandon("the client left", later(1)).unwrap();
    assert_eq!(gone.status, ReviewStatus::Rejected);
    assert_eq!(gone.decided_by.as_deref(), Some("dev@x"));
    assert_eq!(gone.reason.as_deref(), Some("withdrawn: the client left"));
    assert!(gone.is_withdrawn());
    assert!(
        gone.clone()
            .abandon("again", later(2))
            .unwrap_err()
            .is_conflict()
    );
    let rejected = review(&ru)
        .reject(
            p("a@x", &["dba"]).a(),
            Some("withdrawn looks like this"),
            later(1),
        )
        .unwrap();
    assert!(
        !rejected.is_withdrawn(),
        "an approver's rejection is not a withdrawal"
    );
    let e = review(&ru).expire(later(600)).unwrap();
    assert_eq!(e.status, ReviewStatus::Expired);
    // decisions after the timeout are refused even if the sweeper has not run yet
    assert_eq!(
        review(&ru)
            .approve(p("a@x", &["dba"]).a(), ok(), later(600))
            .unwrap_err(),
        TransitionError::Expired
    );
    for terminal in [w, e] {
        let err = terminal
            .clone()
            .approve(p("a@x", &["dba"]).a(), ok(), later(2))
            .unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(
            terminal
                .clone()
                .reject(p("a@x", &["dba"]).a(), Some("x"), later(2))
                .unwrap_err()
                .is_conflict()
        );
        assert!(
            terminal
                .clone()
                .withdraw(dev.a(), later(2))
                .unwrap_err()
                .is_conflict()
        );
        assert!(
            terminal
                .clone()
                .expire(later(9999))
                .unwrap_err()
                .is_conflict()
        );
    }
    // approved then executed: approving again is a conflict
    let x = review(&ru)
        .approve(p("a@x", &["dba"]).a(), ok(), later(1))
        .unwrap();
    assert!(
        x.clone()
            .approve(p("b@x", &["dba"]).a(), ok(), later(2))
            .unwrap_err()
            .is_conflict()
    );
    let x = x.mark_executed().unwrap();
    assert!(x.clone().mark_executed().unwrap_err().is_conflict());
}

#[test]
fn auto_approval_is_recorded() {
    let ru = rule(RuleType::Command, &["dba"], false, 1, &[]);
    let r = review(&ru).auto_approve(later(0));
    assert_eq!(r.status, ReviewStatus::Approved);
    assert!(r.approvals[0].auto);
}

#[test]
fn jit_windows_shorten_revoke_and_finish() {
    let ru = rule(RuleType::Jit, &["dba"], false, 1, &[]);
    let a = p("a@x", &["dba"]);
    let too_long = ApproveInput {
        duration_sec: Some(7200),
        ..ok()
    };
    assert!(
        review(&ru)
            .approve(a.a(), too_long, later(1))
            .unwrap_err()
            .is_bad_request()
    );
    let shorter = ApproveInput {
        duration_sec: Some(60),
        ..ok()
    };
    let r = review(&ru).approve(a.a(), shorter, later(10)).unwrap();
    assert_eq!(r.window_end, Some(later(70)));
    assert!(r.window_active(later(69)) && !r.window_active(later(70)));
    assert_eq!(
        r.clone().finish_window(later(69)).unwrap_err(),
        TransitionError::WindowOpen
    );
    assert_eq!(
        r.clone().finish_window(later(70)).unwrap().status,
        ReviewStatus::Executed
    );
    assert!(
        r.clone().mark_executed().is_err(),
        "a jit review is never 'executed' as a command"
    );
    // an auditor in the approver group revokes nothing
    let groups = vec!["dba".to_string()];
    let auditor = Actor {
        email: "audit@x",
        groups: &groups,
        admin: false,
        auditor: true,
    };
    assert_eq!(
        r.clone().revoke(auditor, None, later(20)).unwrap_err(),
        TransitionError::ReadOnly
    );
    // revoke: by a random user refused, by an admin allowed
    let nobody = p("n@x", &["dev"]);
    assert_eq!(
        r.clone().revoke(nobody.a(), None, later(20)).unwrap_err(),
        TransitionError::NotRevoker
    );
    let admin = P {
        email: "root@x",
        groups: vec![],
        admin: true,
    };
    let v = r
        .clone()
        .revoke(admin.a(), Some("incident over"), later(20))
        .unwrap();
    assert_eq!(v.status, ReviewStatus::Revoked);
    assert_eq!(v.window_end, Some(later(20)));
    assert!(!v.window_active(later(21)));
    assert!(
        v.revoke(admin.a(), None, later(21))
            .unwrap_err()
            .is_conflict()
    );
    // a pending window cannot be revoked (reject it instead)
    assert!(review(&ru).revoke(admin.a(), None, later(1)).is_err());
}

#[derive(Debug, Clone)]
enum Act {
    Approve(usize, bool),
    Reject(usize),
    Withdraw,
    Expire(i64),
}

const PEOPLE: [(&str, &[&str]); 6] = [
    ("dev@x", &["dev", "dba"]),
    ("a@x", &["dba"]),
    ("b@x", &["sec"]),
    ("c@x", &["dba", "sec"]),
    ("d@x", &["dev"]),
    ("f@x", &["oncall"]),
];

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (0..PEOPLE.len(), proptest::bool::weighted(0.15)).prop_map(|(i, f)| Act::Approve(i, f)),
        1 => (0..PEOPLE.len()).prop_map(Act::Reject),
        1 => Just(Act::Withdraw),
        1 => (0..1200i64).prop_map(Act::Expire),
    ]
}

/// One random action by one of [`PEOPLE`] (or the requester) at `later(t)`; an expiry moves
/// `t` on by its seconds first.
fn apply(r: &Review, a: Act, t: &mut i64) -> Result<Review, TransitionError> {
    let actor = |i: usize| {
        let (email, gs) = PEOPLE[i];
        (
            email,
            gs.iter().map(|s| s.to_string()).collect::<Vec<String>>(),
        )
    };
    fn who<'a>(email: &'a str, groups: &'a [String]) -> Actor<'a> {
        Actor {
            email,
            groups,
            admin: false,
            auditor: false,
        }
    }
    match a {
        Act::Approve(i, f) => {
            let (email, gs) = actor(i);
            let input = if f { force("because") } else { ok() };
            r.clone().approve(who(email, &gs), input, later(*t))
        }
        Act::Reject(i) => {
            let (email, gs) = actor(i);
            r.clone().reject(who(email, &gs), Some("no"), later(*t))
        }
        Act::Withdraw => {
            let gs = vec!["dev".to_string()];
            r.clone().withdraw(who("dev@x", &gs), later(*t))
        }
        Act::Expire(s) => {
            *t += s;
            r.clone().expire(later(*t))
        }
    }
}

proptest! {
    /// Random sequences of actions never reach APPROVED without a valid quorum (or a force
    /// approval by a force-group member with a reason), and terminal states never change.
    #[test]
    fn never_approved_without_quorum(
        all in any::<bool>(),
        amount in 1u32..4,
        two_groups in any::<bool>(),
        acts in proptest::collection::vec(act(), 0..12),
    ) {
        let groups: &[&str] = if two_groups { &["dba", "sec"] } else { &["dba"] };
        let ru = rule(RuleType::Command, groups, all, amount, &["oncall"]);
        let mut r = review(&ru);
        let mut t = 1i64;
        for a in acts {
            t += 1;
            let before = r.clone();
            let res = apply(&r, a, &mut t);
            match res {
                Ok(next) => {
                    prop_assert!(!before.status.is_terminal(), "terminal review changed");
                    r = next;
                }
                Err(_) => prop_assert_eq!(&r, &before),
            }
            if r.status == ReviewStatus::Approved {
                let forced_ok = r.approvals.iter().any(|a| a.forced
                    && a.reason.is_some()
                    && PEOPLE.iter().any(|(e, g)| *e == a.approver && g.contains(&"oncall")));
                let humans: Vec<&Approval> = r.approvals.iter().filter(|a| !a.forced).collect();
                let distinct: std::collections::HashSet<&str> = humans.iter().map(|a| a.approver.as_str()).collect();
                prop_assert!(!distinct.contains("dev@x"), "requester counted");
                let amount_ok = distinct.len() >= amount as usize;
                // brute force: is there an assignment of distinct people to every group?
                let cover_ok = !all || groups.iter().all(|g| humans.iter().any(|a| a.eligible_groups.iter().any(|x| x == g)))
                    && (groups.len() < 2 || humans.len() >= 2 && {
                        humans.iter().any(|x| x.eligible_groups.iter().any(|g| g == "dba")
                            && humans.iter().any(|y| y.approver != x.approver && y.eligible_groups.iter().any(|g| g == "sec")))
                    });
                prop_assert!(forced_ok || (amount_ok && cover_ok), "approved without quorum: {:?}", r.approvals);
            }
        }
    }
}

#[test]
fn auditors_decide_nothing_whatever_their_groups() {
    let ru = rule(RuleType::Command, &["dba"], false, 1, &["dba"]);
    let groups = vec!["dba".to_string()];
    let auditor = Actor {
        email: "audit@x",
        groups: &groups,
        admin: false,
        auditor: true,
    };
    let r = review(&ru);
    assert_eq!(
        r.clone().approve(auditor, ok(), later(1)).unwrap_err(),
        TransitionError::ReadOnly
    );
    let force = ApproveInput {
        force: true,
        reason: Some("audit".into()),
        ..ApproveInput::default()
    };
    assert_eq!(
        r.clone().approve(auditor, force, later(1)).unwrap_err(),
        TransitionError::ReadOnly
    );
    assert_eq!(
        r.clone().reject(auditor, Some("no"), later(1)).unwrap_err(),
        TransitionError::ReadOnly
    );
    // The same groups without the role decide.
    let dba = Actor {
        auditor: false,
        ..auditor
    };
    assert_eq!(
        r.approve(dba, ok(), later(1)).unwrap().status,
        ReviewStatus::Approved
    );
}

proptest! {
    /// Whatever state a review reaches, `permitted` answers for every actor exactly what the
    /// transitions do: no adapter can offer a button the decision refuses, or hide one it takes.
    #[test]
    fn permitted_agrees_with_every_transition(
        jit in any::<bool>(),
        acts in proptest::collection::vec(act(), 0..10),
    ) {
        let kind = if jit { RuleType::Jit } else { RuleType::Command };
        let ru = rule(kind, &["dba", "sec"], false, 2, &["oncall"]);
        let mut r = review(&ru);
        let mut t = 1i64;
        let mut people: Vec<(&str, Vec<String>, bool, bool)> = PEOPLE
            .iter()
            .map(|(e, g)| (*e, g.iter().map(|s| s.to_string()).collect(), false, false))
            .collect();
        people.push(("root@x", vec![], true, false));
        people.push(("audit@x", vec!["dba".into(), "oncall".into()], false, true));
        people.push(("dev@x", vec!["dev".into()], false, true));
        for a in acts {
            t += 1;
            if let Ok(n) = apply(&r, a, &mut t) {
                r = n;
            }
            let now = later(t);
            for (email, groups, admin, auditor) in &people {
                let who = Actor { email, groups, admin: *admin, auditor: *auditor };
                let p = r.permitted(who, now);
                prop_assert_eq!(p.approve, r.clone().approve(who, ok(), now).is_ok(), "approve for {}", email);
                prop_assert_eq!(p.force, r.clone().approve(who, force("why"), now).is_ok(), "force for {}", email);
                prop_assert_eq!(p.reject, r.clone().reject(who, Some("no"), now).is_ok(), "reject for {}", email);
                prop_assert_eq!(p.withdraw, r.clone().withdraw(who, now).is_ok(), "withdraw for {}", email);
                prop_assert_eq!(p.revoke, r.clone().revoke(who, None, now).is_ok(), "revoke for {}", email);
                if *auditor {
                    prop_assert!(!p.any(), "an auditor may do nothing");
                }
            }
        }
    }
}

#[test]
fn outcome_names_how_the_review_was_decided() {
    let ru = rule(RuleType::Command, &["dba"], false, 1, &["oncall"]);
    let dba = vec!["dba".to_string()];
    let oncall = vec!["oncall".to_string()];
    let dev = vec!["dev".to_string()];
    let a = Actor {
        email: "a@x",
        groups: &dba,
        admin: false,
        auditor: false,
    };
    let f = Actor {
        email: "f@x",
        groups: &oncall,
        admin: false,
        auditor: false,
    };
    let d = Actor {
        email: "dev@x",
        groups: &dev,
        admin: false,
        auditor: false,
    };
    assert_eq!(review(&ru).outcome(), Outcome::Pending);
    let approved = review(&ru).approve(a, ok(), later(1)).unwrap();
    assert_eq!(approved.outcome(), Outcome::Approved);
    assert_eq!(
        approved.mark_executed().unwrap().outcome(),
        Outcome::Approved
    );
    let forced = review(&ru).approve(f, force("outage"), later(1)).unwrap();
    assert_eq!(forced.outcome(), Outcome::ForceApproved);
    assert_eq!(
        review(&ru).auto_approve(later(1)).outcome(),
        Outcome::AutoApproved
    );
    assert_eq!(
        review(&ru)
            .reject(a, Some("no"), later(1))
            .unwrap()
            .outcome(),
        Outcome::Rejected
    );
    assert_eq!(
        review(&ru).withdraw(d, later(1)).unwrap().outcome(),
        Outcome::Withdrawn
    );
    assert_eq!(
        review(&ru)
            .abandon("the client left", later(1))
            .unwrap()
            .outcome(),
        Outcome::Withdrawn
    );
    assert_eq!(
        review(&ru).expire(later(100_000)).unwrap().outcome(),
        Outcome::Expired
    );
    // A rejection whose reason starts like a withdrawal is still a rejection.
    let sly = review(&ru)
        .reject(a, Some("withdrawn, says I"), later(1))
        .unwrap();
    assert_eq!(sly.outcome(), Outcome::Rejected);
    // A withdrawal after some approvals is still a withdrawal.
    let ru2 = rule(RuleType::Command, &["dba"], false, 2, &["oncall"]);
    let half = review(&ru2).approve(a, ok(), later(1)).unwrap();
    assert_eq!(
        half.withdraw(d, later(2)).unwrap().outcome(),
        Outcome::Withdrawn
    );
}
