//! Statement classification for native PostgreSQL clients under a command rule: which
//! statements may run without a human, and which must be held for review.
//!
//! **One grammar: PostgreSQL's own.** The text is parsed by libpg_query (the `pg_query` crate:
//! the server's own lexer and grammar, compiled in), so identifiers, quoting, `U&"…"` escapes,
//! dollar quotes and comments are read exactly as the server reads them — provided the session
//! cannot change how the server lexes. The proxy pins that (`standard_conforming_strings = on`,
//! `client_encoding = UTF8`, no `options`), and any `SET` of such a setting is held here.
//!
//! **An allowlist, not a denylist.** A statement runs without review only when its parse tree
//! is a read that this module knows: `SELECT` (no `INTO`, no locking clause, no data-modifying
//! CTE), `SHOW`, `EXPLAIN` without `ANALYZE`, `COPY … TO STDOUT`, cursors over reads,
//! transaction control that does not ask for read-write, `SET` of a short list of harmless
//! settings, `DEALLOCATE`. Every node of the tree must be of a kind listed in
//! [`READ_NODES`], every function call must name a function in [`READ_FUNCTIONS`] (unqualified
//! or in `pg_catalog`; matched on the parsed name, so quoting and escapes change nothing) and
//! every operator one in [`READ_OPERATORS`]. Everything else — user-defined functions
//! included — is held.
//!
//! **Not the only wall.** Some calls cannot be seen in a parse tree (a view or a column in
//! attribute notation `t.f` can call a user function; a cast can run a type's input function).
//! That is why the proxy also runs every unapproved statement in a read-only transaction on the
//! server: this classifier decides what a human must see, the server refuses what slipped by.
//!
//! Pure: no I/O, no clock. Fail closed: anything that does not parse is held.

use pg_query::NodeEnum;
use pg_query::protobuf::{self, TransactionStmtKind, VariableSetKind};
use serde_json::Value;

/// How a statement (or a query text of several) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Reads only, as far as the parse tree shows: may run without review (read-only).
    Read,
    /// Must be approved first; the reason says why, for the approver and the engineer.
    Write { reason: String },
}

impl Reading {
    fn write(reason: impl Into<String>) -> Self {
        Reading::Write {
            reason: reason.into(),
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Reading::Read)
    }
}

/// Node kinds (pg_query's names) that may appear anywhere inside a read.
pub const READ_NODES: &[&str] = &[
    "SelectStmt",
    "ResTarget",
    "ColumnRef",
    "AStar",
    "AConst",
    "String",
    "Integer",
    "Float",
    "Boolean",
    "BitString",
    "AExpr",
    "BoolExpr",
    "FuncCall",
    "TypeCast",
    "TypeName",
    "RangeVar",
    "JoinExpr",
    "Alias",
    "SortBy",
    "WindowDef",
    "WithClause",
    "CommonTableExpr",
    "CtesearchClause",
    "CtecycleClause",
    "SubLink",
    "CaseExpr",
    "CaseWhen",
    "CoalesceExpr",
    "MinMaxExpr",
    "NullTest",
    "BooleanTest",
    "AIndices",
    "AIndirection",
    "AArrayExpr",
    "RowExpr",
    "ParamRef",
    "RangeSubselect",
    "RangeFunction",
    "SqlvalueFunction",
    "CollateClause",
    "List",
    "GroupingSet",
    "GroupingFunc",
    "NamedArgExpr",
];

/// Built-in functions without side effects (names as PostgreSQL's parser yields them).
/// Grouped by class; each class has a test. Server-file readers (`pg_read_file`, `pg_ls_dir`),
/// sequence, advisory-lock, large-object, configuration (`set_config`), signalling
/// (`pg_cancel_backend`), `dblink*`, query-text runners (`query_to_xml`) and sleep functions
/// are deliberately absent.
pub const READ_FUNCTIONS: &[&str] = &[
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "corr",
    "covar_pop",
    "covar_samp",
    // window functions
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // math
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sign",
    "sqrt",
    "cbrt",
    "power",
    "pow",
    "exp",
    "ln",
    "log",
    "log10",
    "mod",
    "div",
    "greatest",
    "least",
    "width_bucket",
    "pi",
    "degrees",
    "radians",
    "numeric",
    // strings
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "substr",
    "substring",
    "position",
    "strpos",
    "replace",
    "translate",
    "concat",
    "concat_ws",
    "format",
    "left",
    "right",
    "repeat",
    "reverse",
    "split_part",
    "starts_with",
    "string_to_array",
    "array_to_string",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "md5",
    "sha256",
    "encode",
    "decode",
    "to_hex",
    "ascii",
    "chr",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "overlay",
    "normalize",
    "to_char",
    "to_number",
    "to_date",
    "to_timestamp",
    // date and time
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "clock_timestamp",
    "date_trunc",
    "date_part",
    "date_bin",
    "extract",
    "age",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "timezone",
    "isfinite",
    "overlaps",
    // arrays, sets, json
    "unnest",
    "generate_series",
    "generate_subscripts",
    "array_length",
    "array_lower",
    "array_upper",
    "array_ndims",
    "array_dims",
    "array_position",
    "array_positions",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "cardinality",
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_typeof",
    "jsonb_typeof",
    "json_array_length",
    "jsonb_array_length",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "jsonb_pretty",
    "jsonb_strip_nulls",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_path_query",
    "jsonb_path_exists",
    "jsonb_path_match",
    // conditionals, types
    "nullif",
    "coalesce",
    "num_nulls",
    "num_nonnulls",
    "pg_typeof",
    "format_type",
    // session and system information
    "version",
    "current_database",
    "current_catalog",
    "current_schema",
    "current_schemas",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "current_setting",
    "current_query",
    "pg_backend_pid",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_is_in_recovery",
    "inet_server_addr",
    "inet_server_port",
    "inet_client_addr",
    "inet_client_port",
    "pg_current_wal_lsn",
    "pg_encoding_to_char",
    "pg_char_to_encoding",
    "pg_jit_available",
    // catalog introspection (psql's \d commands, drivers, ORMs)
    "pg_table_is_visible",
    "pg_type_is_visible",
    "pg_function_is_visible",
    "pg_get_userbyid",
    "pg_get_expr",
    "pg_get_constraintdef",
    "pg_get_indexdef",
    "pg_get_viewdef",
    "pg_get_triggerdef",
    "pg_get_functiondef",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_function_result",
    "pg_get_keywords",
    "pg_get_serial_sequence",
    "pg_get_partkeydef",
    "pg_get_partition_constraintdef",
    "pg_get_statisticsobjdef_columns",
    "pg_get_ruledef",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_size_pretty",
    "pg_relation_filenode",
    "pg_column_size",
    "obj_description",
    "col_description",
    "shobj_description",
    "has_table_privilege",
    "has_column_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_sequence_privilege",
    "pg_has_role",
    "to_regclass",
    "to_regtype",
    "to_regproc",
    "to_regnamespace",
    "pg_index_column_has_property",
    "pg_indexam_has_property",
    "pg_collation_is_visible",
    "pg_opclass_is_visible",
    "pg_conversion_is_visible",
    "pg_ts_config_is_visible",
    "pg_statistics_obj_is_visible",
    "pg_operator_is_visible",
    "pg_partition_tree",
    "pg_partition_root",
    "pg_inherits_parents",
];

/// Built-in operators (as written; the parser keeps their spelling).
pub const READ_OPERATORS: &[&str] = &[
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "~~", "~~*", "!~~",
    "!~~*", "~", "~*", "!~", "!~*", "@>", "<@", "&&", "->", "->>", "#>", "#>>", "?", "?|", "?&",
    "@@", "|/", "||/", "@", "&", "|", "#", "<<", ">>", "-|-", "<->",
];

/// Settings a reviewed session may change without approval: none changes how SQL is lexed,
/// who the session is, where names resolve, or whether it may write.
pub const SETTABLE: &[&str] = &[
    "application_name",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "datestyle",
    "timezone",
    "time zone",
    "intervalstyle",
    "extra_float_digits",
    "client_min_messages",
    "bytea_output",
    "work_mem",
    "jit",
    "transaction_read_only",
];

/// Reads `sql` (one or several statements) as PostgreSQL does.
pub fn read(sql: &str) -> Reading {
    read_with_shape(sql).0
}

/// The reading, and whether it holds for every text of the same shape (see [`shape`]): true
/// for exactly one `SELECT`, whose reading depends on node kinds, function and operator names
/// only, never on a constant's value.
fn read_with_shape(sql: &str) -> (Reading, bool) {
    let parsed = match pg_query::parse(sql) {
        Ok(p) => p,
        Err(e) => {
            return (
                Reading::write(format!("it does not parse as PostgreSQL SQL ({e})")),
                false,
            );
        }
    };
    let stmts = &parsed.protobuf.stmts;
    let one_select = stmts.len() == 1
        && matches!(
            stmts[0].stmt.as_ref().and_then(|n| n.node.as_ref()),
            Some(NodeEnum::SelectStmt(_))
        );
    for raw in stmts {
        let reading = match raw.stmt.as_ref().and_then(|n| n.node.as_ref()) {
            Some(node) => statement(node),
            None => Reading::write("an empty statement node"),
        };
        if !reading.is_read() {
            return (reading, one_select);
        }
    }
    (Reading::Read, one_select)
}

/// A text's shape: its tokens as PostgreSQL's own lexer (libpg_query's scanner) cuts them,
/// each literal replaced by its kind, comments left out. The grammar decides on token kinds
/// only, so two texts of one shape parse into trees that differ only in their constants' values
/// — and a `SELECT`'s reading never looks at those. This is what lets a driver's statements
/// that differ only in their literals (`… WHERE aid = 12345`) share one parse: the lexer costs
/// about a tenth of the parse (`bench/classify.sh`). `None` when the lexer refuses the text.
fn shape(sql: &str) -> Option<Vec<u8>> {
    use pg_query::protobuf::Token as T;
    let scanned = pg_query::scan(sql).ok()?;
    let mut key = Vec::with_capacity(sql.len());
    for t in &scanned.tokens {
        let token = T::try_from(t.token).ok()?;
        match token {
            T::SqlComment | T::CComment => continue,
            T::Sconst | T::Usconst | T::Bconst | T::Xconst | T::Iconst | T::Fconst => {
                key.push(1);
                key.extend_from_slice(&t.token.to_le_bytes());
            }
            _ => {
                let text = sql.get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?)?;
                key.push(2);
                key.extend_from_slice(text.as_bytes());
            }
        }
        key.push(0);
    }
    Some(key)
}

/// Readings of texts already read (a pure function of the text, so a memo): a driver runs
/// one prepared statement's text many times, and parsing costs far more than a lookup
/// (`bench/classify.sh`). A single `SELECT` is also remembered by its [`shape`], so texts that
/// differ only in literal values share one parse. Bounded: each memo is emptied when full, so
/// a client sending endless distinct texts costs memory up to the bound only.
pub struct Readings {
    memo: std::sync::Mutex<std::collections::HashMap<Box<str>, Reading>>,
    /// Readings by [`shape`], for the shapes whose reading cannot depend on a constant.
    shapes: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Reading>>,
    max: usize,
}

impl Readings {
    /// A memo holding up to `max` texts (each up to [`Readings::MAX_TEXT`] bytes).
    pub fn new(max: usize) -> Self {
        Self {
            memo: std::sync::Mutex::new(std::collections::HashMap::new()),
            shapes: std::sync::Mutex::new(std::collections::HashMap::new()),
            max,
        }
    }

    /// Longer texts are read every time (rarely repeated; kept out of memory).
    pub const MAX_TEXT: usize = 4096;

    /// [`read`], remembered.
    pub fn read(&self, sql: &str) -> Reading {
        if sql.len() > Self::MAX_TEXT {
            return read(sql);
        }
        if let Ok(m) = self.memo.lock()
            && let Some(r) = m.get(sql)
        {
            return r.clone();
        }
        let shape = shape(sql);
        if let Some(key) = &shape
            && let Ok(m) = self.shapes.lock()
            && let Some(r) = m.get(key.as_slice())
        {
            return r.clone();
        }
        let (r, shape_holds) = read_with_shape(sql);
        if let Ok(mut m) = self.memo.lock() {
            if m.len() >= self.max {
                m.clear();
            }
            m.insert(sql.into(), r.clone());
        }
        if let Some(key) = shape.filter(|_| shape_holds)
            && let Ok(mut m) = self.shapes.lock()
        {
            if m.len() >= self.max {
                m.clear();
            }
            m.insert(key.into(), r.clone());
        }
        r
    }
}

/// True when `sql` must be approved before it runs.
pub fn needs_review(sql: &str) -> bool {
    !read(sql).is_read()
}

fn statement(node: &NodeEnum) -> Reading {
    match node {
        NodeEnum::SelectStmt(_) => query_tree(node),
        NodeEnum::VariableShowStmt(_) => Reading::Read,
        NodeEnum::DeallocateStmt(_) => Reading::Read,
        NodeEnum::FetchStmt(_) | NodeEnum::ClosePortalStmt(_) => Reading::Read,
        NodeEnum::DeclareCursorStmt(d) => inner(d.query.as_deref()),
        NodeEnum::ExplainStmt(e) => {
            for opt in &e.options {
                if let Some(NodeEnum::DefElem(d)) = &opt.node
                    && d.defname == "analyze"
                    && !def_is_false(d)
                {
                    return Reading::write("EXPLAIN ANALYZE runs the statement");
                }
            }
            inner(e.query.as_deref())
        }
        NodeEnum::CopyStmt(c) => {
            if c.is_from {
                Reading::write("COPY FROM writes")
            } else if c.is_program || !c.filename.is_empty() {
                Reading::write("COPY TO a server file or program")
            } else if c.query.is_some() {
                inner(c.query.as_deref())
            } else {
                Reading::Read
            }
        }
        NodeEnum::TransactionStmt(t) => transaction(t),
        NodeEnum::VariableSetStmt(s) => set(s),
        other => Reading::write(format!("{} is not a read", kind_name(other))),
    }
}

fn inner(node: Option<&protobuf::Node>) -> Reading {
    match node.and_then(|n| n.node.as_ref()) {
        Some(n) => statement(n),
        None => Reading::write("an empty statement node"),
    }
}

fn def_is_false(d: &protobuf::DefElem) -> bool {
    match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::Boolean(b)) => !b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival == 0,
        Some(NodeEnum::String(s)) => matches!(s.sval.as_str(), "off" | "false" | "0" | "no"),
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(protobuf::a_const::Val::Ival(i)) => i.ival == 0,
            Some(protobuf::a_const::Val::Boolval(b)) => !b.boolval,
            Some(protobuf::a_const::Val::Sval(s)) => {
                matches!(s.sval.as_str(), "off" | "false" | "0" | "no")
            }
            _ => false,
        },
        _ => false,
    }
}

/// Transaction options: isolation and deferrable are fine, read-write needs approval.
fn transaction_options(opts: &[protobuf::Node]) -> Reading {
    for opt in opts {
        match &opt.node {
            Some(NodeEnum::DefElem(d)) => match d.defname.as_str() {
                "transaction_isolation" | "transaction_deferrable" => {}
                "transaction_read_only" if !def_is_false(d) => {}
                _ => return Reading::write("a read-write transaction needs approval"),
            },
            _ => return Reading::write("an unknown transaction option"),
        }
    }
    Reading::Read
}

fn transaction(t: &protobuf::TransactionStmt) -> Reading {
    use TransactionStmtKind as K;
    match TransactionStmtKind::try_from(t.kind).unwrap_or(K::Undefined) {
        K::TransStmtBegin | K::TransStmtStart => transaction_options(&t.options),
        K::TransStmtCommit
        | K::TransStmtRollback
        | K::TransStmtSavepoint
        | K::TransStmtRelease
        | K::TransStmtRollbackTo => Reading::Read,
        _ => Reading::write("two-phase commit commands need approval"),
    }
}

fn set(s: &protobuf::VariableSetStmt) -> Reading {
    use VariableSetKind as K;
    let kind = VariableSetKind::try_from(s.kind).unwrap_or(K::Undefined);
    match kind {
        K::VarSetValue | K::VarSetDefault | K::VarReset | K::VarSetCurrent
            if SETTABLE.contains(&s.name.as_str()) =>
        {
            if s.name == "transaction_read_only" && kind != K::VarSetValue {
                return Reading::write("changing transaction_read_only needs approval");
            }
            if s.name == "transaction_read_only"
                && s.args.iter().any(|a| match &a.node {
                    Some(NodeEnum::AConst(c)) => match &c.val {
                        Some(protobuf::a_const::Val::Sval(v)) => {
                            !matches!(v.sval.as_str(), "on" | "true" | "1" | "yes")
                        }
                        Some(protobuf::a_const::Val::Ival(i)) => i.ival == 0,
                        Some(protobuf::a_const::Val::Boolval(b)) => !b.boolval,
                        _ => true,
                    },
                    _ => true,
                })
            {
                return Reading::write("a read-write transaction needs approval");
            }
            // Values are constants; a function call in them would still be walked.
            for a in &s.args {
                let r = query_tree_of(a);
                if !r.is_read() {
                    return r;
                }
            }
            Reading::Read
        }
        K::VarSetMulti if s.name == "TRANSACTION" || s.name == "SESSION CHARACTERISTICS" => {
            transaction_options(&s.args)
        }
        _ => Reading::write(format!(
            "changing the setting {:?} needs approval (it can change how SQL is read, who the \
             session is, where names resolve, or whether it may write)",
            if s.name.is_empty() { "ALL" } else { &s.name }
        )),
    }
}

fn kind_name(node: &NodeEnum) -> String {
    // The variant name, e.g. `InsertStmt`: serde tags the enum with it.
    match serde_json::to_value(node) {
        Ok(Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
        _ => "this statement".into(),
    }
}

fn query_tree(node: &NodeEnum) -> Reading {
    match serde_json::to_value(node) {
        Ok(v) => walk_node_value(&v),
        Err(_) => Reading::write("its parse tree could not be read"),
    }
}

fn query_tree_of(node: &protobuf::Node) -> Reading {
    match node.node.as_ref() {
        Some(n) => query_tree(n),
        None => Reading::Read,
    }
}

/// A node serialised by serde: `{"Kind": {fields…}}`. Every node of the tree is checked: the
/// walk is over the serialised form, so no field of any node kind can be skipped by mistake.
fn walk_node_value(v: &Value) -> Reading {
    let Value::Object(m) = v else {
        return Reading::write("an unexpected parse tree");
    };
    let Some((kind, body)) = m.iter().next() else {
        return Reading::Read;
    };
    if !READ_NODES.contains(&kind.as_str()) {
        return Reading::write(match kind.as_str() {
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                "it modifies data (in a WITH clause)".to_string()
            }
            "LockingClause" => "it locks rows (FOR UPDATE/SHARE)".to_string(),
            other => format!("it contains {other}, which is not known to be read-only"),
        });
    }
    match kind.as_str() {
        "FuncCall" => {
            let name = names(body.get("funcname"));
            if !function_allowed(&name) {
                return Reading::write(format!(
                    "it calls {}, which is not on Warden's list of read-only functions",
                    name.join(".")
                ));
            }
        }
        "AExpr" => {
            let name = names(body.get("name"));
            let op = match name.as_slice() {
                [op] => Some(op.as_str()),
                [schema, op] if schema == "pg_catalog" => Some(op.as_str()),
                _ => None,
            };
            // BETWEEN and friends carry their keyword as the name.
            let keyword = op.is_some_and(|o| o.contains("BETWEEN"));
            if !op.is_some_and(|o| READ_OPERATORS.contains(&o) || keyword) {
                return Reading::write(format!(
                    "it uses the operator {}, which is not a built-in read-only operator",
                    name.join(".")
                ));
            }
        }
        "SelectStmt" if body.get("into_clause").is_some_and(|c| !c.is_null()) => {
            return Reading::write("SELECT INTO creates a table");
        }
        _ => {}
    }
    walk_fields(body)
}

/// Recurses into every field. A `Node` wrapper serialises as an object whose only key is
/// `node`; its value is the node to check (some node kinds also have a field named `node`,
/// e.g. `SortBy`, whose value is such a wrapper).
fn walk_fields(v: &Value) -> Reading {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("node") => match &m["node"] {
            Value::Null => Reading::Read,
            inner @ Value::Object(_) => walk_node_value(inner),
            _ => Reading::write("an unexpected parse tree"),
        },
        Value::Object(m) => {
            for child in m.values() {
                let r = walk_fields(child);
                if !r.is_read() {
                    return r;
                }
            }
            Reading::Read
        }
        Value::Array(items) => {
            for i in items {
                let r = walk_fields(i);
                if !r.is_read() {
                    return r;
                }
            }
            Reading::Read
        }
        _ => Reading::Read,
    }
}

/// The strings of a name list (`[{"node": {"String": {"sval": "x"}}}, …]`).
fn names(v: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .map(|i| {
            i.pointer("/node/String/sval")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

fn function_allowed(name: &[String]) -> bool {
    match name {
        [f] => READ_FUNCTIONS.contains(&f.as_str()),
        [schema, f] if schema == "pg_catalog" => READ_FUNCTIONS.contains(&f.as_str()),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
