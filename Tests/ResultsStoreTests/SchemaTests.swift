import Foundation
import GRDB
import Testing

@testable import ResultsStore

@Suite struct SchemaTests {
    @Test func migrationsCreateTheSchema() throws {
        let db = try ResultsDatabase.inMemory()
        let tables = try db.query(sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        let names = tables.rows.map { $0[0].description }
        for table in ["batches_done", "grdb_migrations", "results", "run_prompts", "runs", "summaries", "estimator_errors",
                      "train_steps", "run_shards", "edges", "faithfulness", "circuit_edges"] {
            #expect(names.contains(table), "missing table \(table)")
        }
        let applied = try db.query(sql: "SELECT identifier FROM grdb_migrations")
        #expect(applied.rows == [[.text("v1")], [.text("v2")], [.text("v3")], [.text("v4")], [.text("v5")]])
        let columns = try db.query(sql: "SELECT name FROM pragma_table_info('results') ORDER BY cid")
        #expect(columns.rows.map { $0[0].description }
                == ["run_id", "prompt_index", "site", "layer", "position", "head", "quantity", "value"])
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
            "INSERT INTO results VALUES (\(id), 0, 'result', 0, NULL, 0, 'dla', NULL)",
            "INSERT INTO results VALUES (999, 0, 'result', 0, NULL, 0, 'dla', 1.0)",  // no such run
            "INSERT INTO results VALUES (\(id), 0, 'result', -1, NULL, 0, 'dla', 1.0)",
            "INSERT INTO results VALUES (\(id), 0, 'embed', NULL, NULL, NULL, 'dla', 1.0), (\(id), 0, 'embed', NULL, NULL, NULL, 'dla', 2.0)",
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
        for table in ["run_prompts", "results", "summaries", "batches_done", "estimator_errors", "train_steps"] {
            #expect(try db.query(sql: "SELECT COUNT(*) FROM \(table)").rows == [[.int(0)]])
        }
    }
}

/// Opening databases: concurrent creation, older and damaged files.
@Suite struct OpeningTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/store")

    /// Several writers opening a file that does not exist yet all succeed (the schema is created
    /// once, under an exclusive transaction), and a reader polling meanwhile never fails.
    @Test func concurrentFirstOpensAllSucceed() throws {
        for trial in 0..<8 {
            let temp = TempDatabasePath()
            defer { temp.cleanup() }
            let outcomes = Outcomes()
            let group = DispatchGroup()
            for i in 0..<4 {
                group.enter()
                Thread.detachNewThread {
                    outcomes.record(i, Result { try ResultsDatabase(path: temp.path).beginRun(sampleRun()) })
                    group.leave()
                }
            }
            var readerFailures: [String] = []
            while group.wait(timeout: .now() + 0.005) == .timedOut {
                guard FileManager.default.fileExists(atPath: temp.path) else { continue }
                do { _ = try ResultsDatabase.openReadOnly(path: temp.path).runs() } catch { readerFailures.append(message(error)) }
            }
            for i in 0..<4 { #expect(throws: Never.self, "trial \(trial) writer \(i)") { _ = try outcomes.result(i).get() } }
            #expect(readerFailures.isEmpty, "trial \(trial): \(readerFailures)")
            #expect(try ResultsDatabase.openReadOnly(path: temp.path).runs().count == 4)
        }
    }

    /// A database written by release 0.1.0 (schema v1) opens for writing and migrates in place;
    /// read-only commands ask for the migration instead of failing obscurely.
    @Test func v1DatabaseMigrates() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        try FileManager.default.createDirectory(at: temp.folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent("v1.sqlite"),
                                         to: URL(fileURLWithPath: temp.path))
        #expect(throws: ResultsStoreError.olderSchema(path: temp.path, version: "v1")) {
            try ResultsDatabase.openReadOnly(path: temp.path)
        }
        let db = try ResultsDatabase(path: temp.path)
        #expect(try db.runs().map(\.status) == [.completed, .completed, .completed])
        #expect(try db.query(sql: "SELECT COUNT(*) FROM results").rows == [[.int(1696)]])
        let sites = try db.query(sql: "SELECT site, COUNT(*), MIN(layer), MAX(layer), MIN(head), MAX(head) FROM results GROUP BY site ORDER BY site")
        #expect(sites.rows == [
            [.text("b_O"), .int(256), .int(0), .int(3), .null, .null],
            [.text("embed"), .int(64), .null, .null, .null, .null],
            [.text("mlp_out"), .int(256), .int(0), .int(3), .null, .null],
            [.text("pos_embed"), .int(64), .null, .null, .null, .null],
            [.text("resid_post"), .int(32), .null, .null, .null, .null],
            [.text("result"), .int(1024), .int(0), .int(3), .int(0), .int(3)],
        ])
        _ = try ResultsDatabase.openReadOnly(path: temp.path)
    }

    /// Flipped bytes inside the database: nothing writes into it, and the message says how to recover.
    @Test func damagedDatabaseIsRefused() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        do {
            let db = try ResultsDatabase(path: temp.path)
            for i in 0..<3 { _ = try SyntheticRun(label: "d\(i)", batches: 40, promptsPerBatch: 4).write(to: db) }
            try #require(db.writer).writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        }
        // A damaged copy, in a file no connection has seen.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: temp.path))
        let pageSize = 4096
        #expect(bytes.count > 8 * pageSize)
        for page in [3, 5] {  // b-tree page headers of interior pages (not the file header)
            for i in 0..<12 { bytes[page * pageSize + i] ^= 0x5A }
        }
        let damaged = temp.folder.appendingPathComponent("damaged.sqlite").path
        try bytes.write(to: URL(fileURLWithPath: damaged))
        let error = #expect(throws: ResultsStoreError.self) { try ResultsDatabase(path: damaged) }
        #expect(message(error ?? ResultsStoreError.readOnly(path: "")).contains("\(damaged) is damaged"))
        #expect(message(error ?? ResultsStoreError.readOnly(path: "")).contains(".recover"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: damaged)) == bytes)
        #expect(try ResultsDatabase.openReadOnly(path: damaged).integrityProblems() != nil)
        #expect(try ResultsDatabase.openReadOnly(path: temp.path).integrityProblems() == nil)
    }

    @Test func longQueryTimesOut() throws {
        let db = try ResultsDatabase.inMemory()
        let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c"
        let start = Date()
        let error = #expect(throws: ResultsStoreError.self) { try db.query(sql: forever, timeout: 0.3) }
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(message(error!).contains("stopped after 0 s (--timeout)") || message(error!).contains("--timeout"))
        #expect(try db.query(sql: "SELECT 1").rows == [[.int(1)]])
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
        for (name, sql) in ResultsDatabase.migrations {
            #expect(trimmed(text).contains(trimmed(sql)), "docs/schema.md does not show migration \(name) verbatim")
        }
    }
}
