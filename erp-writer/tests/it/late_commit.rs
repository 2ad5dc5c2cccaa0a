//! Inserts that commit after their writer gave up (issue 16, item 3): the request outlives the
//! client's timeout, the writer (or another one: with Redis down no lease keeps two apart)
//! retries and creates the record, then the first request commits on the server. Only a unique
//! key in ERPNext can refuse that late insert; a look-up before it, or a "keep the oldest"
//! clean-up by the writer that inserted, cannot see it coming.

use std::time::Duration;

use erp_writer::apply_sync_deal;
use shared::testkit::eventually;

use crate::common::{World, deal};

#[tokio::test]
async fn late_commits_from_two_writers_leave_one_address_and_one_contact_each() {
    let w = World::start().await;
    let mut settings = w.settings();
    // Writers that give up quickly; the simulator holds their inserts for longer.
    settings.erpnext.timeout = Duration::from_millis(400);
    let writer_a = erp_writer::site(&settings).expect("site");
    let writer_b = erp_writer::site(&settings).expect("site");
    let cmd = deal("late");
    w.sim.hold_inserts("Address", 1);
    w.sim.hold_inserts("Contact", 1);

    // A creates the Customer; its insert of the Address (and Contacts) hangs: A gives up.
    let a = apply_sync_deal(&writer_a, &cmd)
        .await
        .expect_err("A's insert outlives its timeout");
    assert!(a.error.is_transient(), "{a}");
    // B finds the Customer and no Address or Contact yet; its insert hangs too.
    let b = apply_sync_deal(&writer_b, &cmd)
        .await
        .expect_err("B's insert outlives its timeout");
    assert!(b.error.is_transient(), "{b}");
    assert_eq!(
        w.sim.held_inserts(),
        2,
        "both inserts are still on the server"
    );
    // A's retry gets through: everything is created.
    apply_sync_deal(&writer_a, &cmd)
        .await
        .expect("the retry applies the deal");

    // Now the two held requests commit — or are refused.
    w.sim.release_late_commits();
    let answers = eventually(
        Duration::from_secs(10),
        "both late requests answered",
        || async {
            let done = w.sim.late_commits();
            (done.len() == 2).then_some(done)
        },
    )
    .await;
    assert_eq!(
        answers,
        vec![417, 417],
        "the late inserts meet the unique keys and are rolled back"
    );
    assert_eq!(w.docs("Address").len(), 1, "{:#?}", w.docs("Address"));
    for i in 1..=3 {
        let id = format!("ct-late-{i}");
        assert_eq!(
            w.docs_where("Contact", "hubspot_contact_id", &id).len(),
            1,
            "{id}"
        );
    }
    assert_eq!(w.docs("Contact").len(), 3);
    assert_eq!(w.docs("Sales Order").len(), 1);
    w.cleanup().await;
}
