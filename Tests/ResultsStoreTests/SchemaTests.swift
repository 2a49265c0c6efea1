import Foundation
import GRDB
import Testing

@testable import ResultsStore

@Suite struct SchemaTests {
    @Test func migrationsCreateTheSchema() throws {
        let db = try ResultsDatabase.inMemory()
        let tables = try db.query(sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        let names = tables.rows.map { $0[0].description }
        for table in ["batches_done", "grdb_migrations", "results", "run_prompts", "runs", "summaries"] {
            #expect(names.contains(table), "missing table \(table)")
        }
        let applied = try db.query(sql: "SELECT identifier FROM grdb_migrations")
        #expect(applied.rows == [[.text("v1")]])
        let columns = try db.query(sql: "SELECT name FROM pragma_table_info('results') ORDER BY cid")
        #expect(columns.rows.map { $0[0].description } == ["run_id", "prompt_index", "component", "quantity", "value"])
    }

    @Test func fileDatabaseIsWALAndReopens() throws {
        let temp = TempDatabasePath(file: "nested/deeper/results.sqlite")
        defer { temp.cleanup() }
        do {
            let db = try ResultsDatabase(path: temp.path)
            _ = try db.beginRun(sampleRun())
            #expect(try db.reader.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
        }
        let again = try ResultsDatabase(path: temp.path)
        #expect(try again.runs().count == 1)
    }

    @Test func constraintsGuardTheTables() throws {
        let db = try ResultsDatabase.inMemory()
        let id = try db.beginRun(sampleRun())
        let writer = try #require(db.writer)
        let bad = [
            "UPDATE runs SET status = 'paused' WHERE id = \(id)",
            "UPDATE runs SET ln_mode = 'rmsnorm' WHERE id = \(id)",
            "UPDATE runs SET options_json = 'not json' WHERE id = \(id)",
            "UPDATE runs SET status = 'completed' WHERE id = \(id)",  // completed needs ended_at
            "INSERT INTO results VALUES (\(id), 0, 'L0H0', 'dla', NULL)",
            "INSERT INTO results VALUES (999, 0, 'L0H0', 'dla', 1.0)",  // no such run
            "INSERT INTO batches_done VALUES (\(id), 3, 2)",
        ]
        for sql in bad {
            #expect(throws: DatabaseError.self, "\(sql)") { try writer.write { try $0.execute(sql: sql) } }
        }
    }

    @Test func beginRunValidatesWithClearMessages() throws {
        let db = try ResultsDatabase.inMemory()
        let error = #expect(throws: ResultsStoreError.self) { try db.beginRun(sampleRun(lnMode: "rmsnorm")) }
        #expect(message(error!) == "cannot record run in :memory:: ln_mode 'rmsnorm' is not one of layernorm, ln-free")
        var run = sampleRun()
        run.optionsJSON = "{"
        #expect(throws: ResultsStoreError.invalidRun(path: ":memory:", reason: "options_json is not valid JSON")) {
            try db.beginRun(run)
        }
    }

    @Test func deletingARunCascades() throws {
        let db = try ResultsDatabase.inMemory()
        let synthetic = SyntheticRun(label: "x", batches: 2, promptsPerBatch: 2)
        let id = try synthetic.write(to: db)
        try #require(db.writer).write { try $0.execute(sql: "DELETE FROM runs WHERE id = ?", arguments: [id]) }
        for table in ["run_prompts", "results", "summaries", "batches_done"] {
            #expect(try db.query(sql: "SELECT COUNT(*) FROM \(table)").rows == [[.int(0)]])
        }
    }
}

@Suite struct SchemaDocumentationTests {
    /// docs/schema.md shows the migration's DDL verbatim; keep them in step.
    @Test func docsShowTheDDL() throws {
        let docs = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/schema.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        func trimmed(_ s: String) -> String {
            s.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "\n")
        }
        let (ddl, shown) = (trimmed(Schema.v1), trimmed(text))
        #expect(shown.contains(ddl), "docs/schema.md does not show Schema.v1 verbatim")
    }
}
