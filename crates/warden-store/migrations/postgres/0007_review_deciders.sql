-- Each review's approval and force-approval groups, one row per group: a non-admin's listing
-- filters in the query ("mine, or one of my groups decides it") instead of in memory.
CREATE TABLE review_deciders (
    review_id TEXT NOT NULL,
    grp       TEXT NOT NULL,
    PRIMARY KEY (grp, review_id)
);
INSERT INTO review_deciders (review_id, grp)
    SELECT id, jsonb_array_elements_text(policy_json::jsonb -> 'approval_groups') FROM reviews
    UNION
    SELECT id, jsonb_array_elements_text(policy_json::jsonb -> 'force_approval_groups') FROM reviews
ON CONFLICT DO NOTHING;
