use super::{READ_FUNCTIONS, Reading, Readings, needs_review, read};

fn assert_read(sql: &str) {
    assert_eq!(read(sql), Reading::Read, "{sql}");
}

fn assert_held(sql: &str) {
    assert!(needs_review(sql), "should be held: {sql}");
}

#[test]
fn reads_run_without_review() {
    for sql in [
        "SELECT 1",
        "",
        " ; ",
        "select * from users where id = 3",
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE pg_catalog.pg_table_is_visible(c.oid)",
        "SELECT count(*) FROM t; SELECT now()",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
        "SELECT a, b FROM t WHERE a IN (1, 2) AND b BETWEEN 1 AND 3 OR b IS NULL ORDER BY a DESC LIMIT 5 OFFSET 1",
        "SELECT CASE WHEN x > 0 THEN 'pos' ELSE 'neg' END, coalesce(y, 0), greatest(1, 2) FROM t",
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
        "SELECT x::text, CAST(y AS int), (ARRAY[1,2])[1], (SELECT max(z) FROM u) FROM t",
        "SELECT * FROM t1 JOIN t2 USING (id) WHERE EXISTS (SELECT 1 FROM t3 WHERE t3.id = t1.id)",
        "SELECT * FROM generate_series(1, 10) g",
        "SELECT $1::int + $2",
        "SELECT 'it''s' || E'\\n' || $$dollar$$ || U&'\\0041'",
        "SELECT current_user, current_timestamp, session_user",
        "SHOW search_path",
        "SHOW ALL",
        "EXPLAIN SELECT * FROM t",
        "EXPLAIN (ANALYZE false, VERBOSE) SELECT * FROM t",
        "BEGIN",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "START TRANSACTION READ ONLY",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s1",
        "RELEASE SAVEPOINT s1",
        "ROLLBACK TO SAVEPOINT s1",
        "SET statement_timeout = 1000",
        "SET LOCAL lock_timeout = '1s'",
        "SET application_name = 'psql'",
        "SET TIME ZONE 'UTC'",
        "RESET statement_timeout",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET transaction_read_only = on",
        "DEALLOCATE ALL",
        "DEALLOCATE p1",
        "DECLARE c CURSOR FOR SELECT * FROM t",
        "FETCH 10 FROM c",
        "CLOSE c",
        "COPY t TO STDOUT",
        "COPY (SELECT a FROM t) TO STDOUT WITH (FORMAT csv)",
        "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a",
        "SELECT \"lower\"('X')",
    ] {
        assert_read(sql);
    }
}

#[test]
fn writes_and_ddl_are_held() {
    for sql in [
        "UPDATE t SET x = 1",
        "DELETE FROM t",
        "INSERT INTO t VALUES (1)",
        "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
        "DROP TABLE t",
        "TRUNCATE t",
        "CREATE TABLE t (x int)",
        "ALTER TABLE t ADD y int",
        "GRANT ALL ON t TO bob",
        "COPY t FROM STDIN",
        "COPY t TO '/tmp/x'",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "SELECT 1; DELETE FROM t",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT * FROM (WITH d AS (UPDATE t SET x = 1 RETURNING *) SELECT * FROM d) s",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT 1 INTO t2",
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN (ANALYZE) SELECT 1",
        "EXPLAIN (ANALYZE on) SELECT 1",
        "EXPLAIN DELETE FROM t",
        "DO $$ BEGIN DELETE FROM t; END $$",
        "CALL proc()",
        "VACUUM t",
        "NOTIFY ch",
        "LISTEN ch",
        "LOCK TABLE t",
        "PREPARE p AS DELETE FROM t",
        "PREPARE p AS SELECT 1",
        "EXECUTE p",
        "DISCARD ALL",
        "this is not sql",
        "SELECT 1 FROM",
        "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'",
    ] {
        assert_held(sql);
    }
}

#[test]
fn only_listed_functions_pass_however_they_are_spelled() {
    for sql in [
        "SELECT pg_terminate_backend(42)",
        "SELECT nextval('s')",
        "SELECT setval('s', 1)",
        "SELECT set_config('role', 'admin', false)",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT * FROM pg_read_file('/etc/passwd')",
        "SELECT pg_sleep(10)",
        "SELECT lo_import('/etc/passwd')",
        "SELECT dblink_exec('dbname=x', 'DROP TABLE t')",
        "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')",
        "SELECT pg_advisory_lock(1)",
        "SELECT txid_current()",
        // User-defined functions, however named.
        "SELECT my_writing_function()",
        "SELECT public.lower('x')",
        "SELECT myschema.count(*) FROM t",
        "SELECT \"PG_READ_FILE\"('/etc/passwd')",
        "SELECT U&\"\\0070g_read_file\"('/etc/passwd')",
        "SELECT U&\"\\0070g_terminate_backend\"(1)",
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        "SELECT \"pg_catalog\".\"pg_read_file\"('/etc/passwd')",
        "SELECT x FROM t WHERE x = (SELECT my_writer())",
        "SELECT count(*) FILTER (WHERE my_writer()) FROM t",
        "SELECT * FROM t ORDER BY my_writer()",
        "SELECT * FROM t GROUP BY my_writer()",
        "WITH a AS (SELECT my_writer()) SELECT * FROM a",
        "EXPLAIN ANALYZE SELECT my_writer()",
        "SELECT 1 OPERATOR(public.+) 2",
        "SELECT 1 === 2",
        "SET statement_timeout = my_writer()",
    ] {
        assert_held(sql);
    }
    // The quoted spelling of a listed name is that name.
    assert_read("SELECT \"count\"(*) FROM t");
    assert_read("SELECT pg_catalog.\"count\"(*) FROM t");
}

#[test]
fn every_listed_function_class_reads() {
    for sql in [
        "SELECT count(*), sum(a), avg(a), min(a), max(a), string_agg(b, ','), array_agg(a) FROM t",
        "SELECT rank() OVER w, lag(a) OVER w, first_value(a) OVER w FROM t WINDOW w AS (ORDER BY a)",
        "SELECT abs(-1), round(1.5), sqrt(4), power(2, 3), mod(5, 2)",
        "SELECT lower('A'), upper('a'), length('x'), substring('abc' FROM 2), replace('a', 'a', 'b'), format('%s', 1)",
        "SELECT now(), date_trunc('day', now()), extract(year FROM now()), age(now())",
        "SELECT unnest(ARRAY[1]), array_length(ARRAY[1], 1), to_jsonb(1), jsonb_build_object('a', 1)",
        "SELECT version(), current_database(), current_setting('search_path'), pg_backend_pid()",
        "SELECT pg_get_indexdef(1), pg_relation_size(1), obj_description(1, 'pg_class'), has_table_privilege('t', 'SELECT')",
    ] {
        assert_read(sql);
    }
    for f in [
        "pg_read_file",
        "pg_ls_dir",
        "set_config",
        "nextval",
        "pg_sleep",
        "dblink",
    ] {
        assert!(!READ_FUNCTIONS.contains(&f), "{f} must never be listed");
    }
}

#[test]
fn settings_that_change_reading_identity_or_writes_are_held() {
    for sql in [
        "SET standard_conforming_strings = off",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'SJIS'",
        "SET search_path = evil, pg_catalog",
        "SET ROLE admin",
        "SET SESSION AUTHORIZATION bob",
        "SET default_transaction_read_only = off",
        "SET transaction_read_only = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "START TRANSACTION READ WRITE",
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "RESET ALL",
        "RESET default_transaction_read_only",
        "SET backslash_quote = on",
        "SET session_replication_role = replica",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
    ] {
        assert_held(sql);
    }
}

#[test]
fn reasons_name_what_was_found() {
    let Reading::Write { reason } = read("SELECT U&\"\\0070g_read_file\"('/etc/passwd')") else {
        panic!("held");
    };
    assert!(reason.contains("pg_read_file"), "{reason}");
    let Reading::Write { reason } = read("DELETE FROM t") else {
        panic!("held");
    };
    assert!(reason.contains("DeleteStmt"), "{reason}");
}

#[test]
fn remembered_readings_are_the_readings() {
    let memo = Readings::new(2);
    for sql in [
        "SELECT 1",
        "DELETE FROM t",
        "SELECT 1",
        "SELECT 2",
        "DELETE FROM t",
        "SELECT pg_sleep(1)",
    ] {
        assert_eq!(memo.read(sql), read(sql), "{sql}");
        assert_eq!(memo.read(sql), read(sql), "{sql} again");
    }
    assert!(memo.memo.lock().unwrap().len() <= 2, "bounded");
    let long = format!("SELECT 1 /* {} */", "x".repeat(Readings::MAX_TEXT));
    assert!(memo.read(&long).is_read());
    assert!(!memo.memo.lock().unwrap().contains_key(long.as_str()));
}

#[test]
fn texts_of_one_shape_share_a_reading_only_where_constants_cannot_matter() {
    let memo = Readings::new(64);
    // Literal values differ: one SELECT shape, one reading.
    assert!(memo.read("SELECT abalance FROM a WHERE aid = 1").is_read());
    assert!(
        memo.read("SELECT abalance FROM a WHERE aid = 99999")
            .is_read()
    );
    assert_eq!(memo.shapes.lock().unwrap().len(), 1);
    // Any token that is not a literal changes the shape: names, operators, keywords.
    assert_held("SELECT abalance FROM a WHERE aid = 1 FOR UPDATE");
    assert!(
        !memo
            .read("SELECT abalance FROM a WHERE aid = 1 FOR UPDATE")
            .is_read()
    );
    assert!(!memo.read("SELECT pg_sleep(1)").is_read());
    assert!(!memo.read("SELECT \"pg_sleep\"(2)").is_read());
    assert!(
        !memo
            .read("SELECT U&\"\\0070g_read_file\"('/etc/hostname')")
            .is_read()
    );
    // Where a literal's value decides, nothing is shared by shape: each text is read.
    for (sql, read) in [
        ("SET transaction_read_only = 'on'", true),
        ("SET transaction_read_only = 'off'", false),
        ("BEGIN; SELECT 1", true),
        ("EXPLAIN (ANALYZE false) SELECT 1", true),
        ("EXPLAIN (ANALYZE true) SELECT 1", false),
    ] {
        assert_eq!(memo.read(sql).is_read(), read, "{sql}");
        assert_eq!(memo.read(sql), super::read(sql), "{sql}");
    }
    assert!(!memo.read("SET transaction_read_only = 'off'").is_read());
    // Comments are not part of the shape; a statement hidden after one is.
    assert!(
        memo.read("SELECT abalance /* hi */ FROM a WHERE aid = 7")
            .is_read()
    );
    assert!(
        !memo
            .read("SELECT abalance FROM a WHERE aid = 7; DELETE FROM a")
            .is_read()
    );
}
