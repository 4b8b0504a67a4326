-- Each review's approval and force-approval groups, one row per group: a non-admin's listing
-- filters in the query ("mine, or one of my groups decides it") instead of in memory.
CREATE TABLE review_deciders (
    review_id TEXT NOT NULL,
    grp       TEXT NOT NULL,
    PRIMARY KEY (grp, review_id)
);
INSERT OR IGNORE INTO review_deciders (review_id, grp)
    SELECT r.id, g.value FROM reviews r, json_each(r.policy_json, '$.approval_groups') g
    UNION
    SELECT r.id, g.value FROM reviews r, json_each(r.policy_json, '$.force_approval_groups') g;
