-- A listing by status (the pending queue above all) reads its page newest first straight off
-- this index instead of sorting every review of that status.
CREATE INDEX reviews_status_created ON reviews (status, created_at_ms, id);
-- A user's own reviews by status, newest first (half of a non-admin's listing; covering).
CREATE INDEX reviews_requester_status ON reviews (requester, status, created_at_ms, id);

-- The deciders table carries the columns a listing filters on (status follows the review; the
-- others never change), so "the reviews one of my groups decides" is counted and paged from
-- its own index, without visiting a review that does not match.
CREATE TABLE review_visibility (
    review_id     TEXT NOT NULL,
    grp           TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    connection    TEXT NOT NULL,
    requester     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    PRIMARY KEY (grp, review_id)
);
INSERT INTO review_visibility (review_id, grp, status, created_at_ms, connection, requester, kind)
    SELECT d.review_id, d.grp, r.status, r.created_at_ms, r.connection, r.requester, r.kind
    FROM review_deciders d JOIN reviews r ON r.id = d.review_id;
DROP TABLE review_deciders;
ALTER TABLE review_visibility RENAME TO review_deciders;
CREATE INDEX review_deciders_status ON review_deciders (grp, status, created_at_ms, review_id);
CREATE INDEX review_deciders_review ON review_deciders (review_id);
