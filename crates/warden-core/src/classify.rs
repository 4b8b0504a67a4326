//! Statement classification for native clients under a command rule: which statements can run
//! without a human (read-only) and which must be held for review.
//!
//! Fail closed: anything that does not parse, any statement kind not known to be read-only, and
//! any query that writes (DML in a CTE, `SELECT … INTO`, row locks) or calls a function with
//! side effects is held. Read-only statements still run audited. The function denylist cannot
//! know every user-defined function: connections that must never be written to without review
//! should also use a read-only upstream role (say so in the connection's docs).

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Built-in functions with side effects (or that read server files): calling one is a write.
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "PG_TERMINATE_BACKEND",
    "PG_CANCEL_BACKEND",
    "PG_RELOAD_CONF",
    "PG_ROTATE_LOGFILE",
    "SET_CONFIG",
    "NEXTVAL",
    "SETVAL",
    "LO_",
    "DBLINK",
    "PG_ADVISORY",
    "PG_TRY_ADVISORY",
    "PG_PROMOTE",
    "PG_SWITCH_WAL",
    "PG_CREATE_",
    "PG_DROP_REPLICATION_SLOT",
    "PG_REPLICATION_ORIGIN",
    "PG_FILE_",
    "PG_READ_FILE",
    "PG_READ_BINARY_FILE",
    "PG_LS_",
    "PG_STAT_RESET",
    "PG_LOGICAL_EMIT_MESSAGE",
    "QUERY_TO_XML",
    "TXID_",
    "PG_IMPORT_SYSTEM_COLLATIONS",
    "PG_WAL_REPLAY_",
    "PG_BACKUP_",
    "PG_LOG_BACKEND",
];

const WRITE_TOKENS: &[&str] = &[
    " INTO ",
    "FOR UPDATE",
    "FOR SHARE",
    "FOR NO KEY UPDATE",
    "FOR KEY SHARE",
    "INSERT ",
    "UPDATE ",
    "DELETE ",
    "MERGE ",
];

fn query_writes(text_upper: &str) -> bool {
    let padded = format!(" {text_upper} ");
    WRITE_TOKENS.iter().any(|t| padded.contains(t))
        || SIDE_EFFECT_FUNCTIONS.iter().any(|f| padded.contains(f))
}

fn statement_needs_review(s: &Statement) -> bool {
    match s {
        Statement::Query(q) => query_writes(&q.to_string().to_ascii_uppercase()),
        Statement::Explain {
            analyze, statement, ..
        } => *analyze || statement_needs_review(statement),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => false,
        Statement::Set(_) => {
            // Changing role or session authorization changes privileges: review.
            let t = s.to_string().to_ascii_uppercase();
            t.contains("ROLE") || t.contains("AUTHORIZATION")
        }
        other => {
            // SHOW … variants (SHOW x, SHOW TABLES, …) read only.
            let name = format!("{other:?}");
            !name.starts_with("Show")
        }
    }
}

/// True when `sql` (one or several statements) must be approved before it runs.
pub fn needs_review(sql: &str) -> bool {
    if sql.trim().trim_matches(';').trim().is_empty() {
        return false;
    }
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(stmts) => stmts.is_empty() || stmts.iter().any(statement_needs_review),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::needs_review;

    #[test]
    fn reads_pass_writes_are_held() {
        for ok in [
            "SELECT 1",
            "select * from users where id = 3",
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE pg_catalog.pg_table_is_visible(c.oid)",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SHOW search_path",
            "SET statement_timeout = 1000",
            "EXPLAIN SELECT * FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "",
            " ; ",
            "SELECT count(*) FROM t; SELECT now()",
        ] {
            assert!(!needs_review(ok), "{ok}");
        }
        for held in [
            "UPDATE t SET x = 1",
            "DELETE FROM t",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "TRUNCATE t",
            "CREATE TABLE t (x int)",
            "ALTER TABLE t ADD y int",
            "GRANT ALL ON t TO bob",
            "COPY t FROM STDIN",
            "SELECT 1; DELETE FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * FROM t FOR UPDATE",
            "SELECT 1 INTO t2",
            "EXPLAIN ANALYZE DELETE FROM t",
            "EXPLAIN ANALYZE SELECT 1",
            "SELECT pg_terminate_backend(42)",
            "SELECT nextval('s')",
            "SELECT set_config('role', 'admin', false)",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION bob",
            "DO $$ BEGIN DELETE FROM t; END $$",
            "this is not sql",
            "CALL proc()",
            "VACUUM t",
            "NOTIFY ch",
            "SELECT * FROM pg_read_file('/etc/passwd')",
        ] {
            assert!(needs_review(held), "{held}");
        }
    }
}
