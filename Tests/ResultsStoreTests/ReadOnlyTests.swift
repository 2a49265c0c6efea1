import Foundation
import GRDB
import Testing

@testable import ResultsStore

@Suite struct ReadOnlyTests {
    @Test func missingFileIsAnErrorAndIsNeverCreated() throws {
        let temp = TempDatabasePath(file: "sub/none.sqlite")
        defer { temp.cleanup() }
        let error = #expect(throws: ResultsStoreError.databaseNotFound(path: temp.path)) {
            try ResultsDatabase.openReadOnly(path: temp.path)
        }
        #expect(message(error!).hasPrefix("no results database at \(temp.path): "))
        #expect(!FileManager.default.fileExists(atPath: temp.path))
        #expect(!FileManager.default.fileExists(atPath: temp.folder.path))
    }

    @Test func queryRefusesEveryWrite() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        let writer = try ResultsDatabase(path: temp.path)
        let id = try SyntheticRun(label: "ro", batches: 1, promptsPerBatch: 2).write(to: writer)
        let before = try writer.counts(runID: id)

        let db = try ResultsDatabase.openReadOnly(path: temp.path)
        let writes = [
            "INSERT INTO runs (command) VALUES ('x')",
            "DELETE FROM results",
            "UPDATE runs SET status = 'failed'",
            "CREATE TABLE notes (text TEXT)",
            "CREATE TEMP TABLE scratch (x)",
            "DROP TABLE results",
        ]
        for sql in writes {
            let error = #expect(throws: ResultsStoreError.queryWrites(path: temp.path), "\(sql)") {
                try db.query(sql: sql)
            }
            if let error { #expect(message(error) == "`query` never writes to \(temp.path): use a SELECT statement") }
        }
        // The writable database's query() refuses as well.
        #expect(throws: ResultsStoreError.queryWrites(path: temp.path)) { try writer.query(sql: "DELETE FROM results") }
        // Below our check, the connection itself is read-only: SQLite refuses.
        let sqliteError = #expect(throws: DatabaseError.self) {
            try db.reader.unsafeRead { try $0.execute(sql: "DELETE FROM results") }
        }
        #expect(sqliteError?.resultCode == .SQLITE_READONLY)
        // And the write API says why.
        #expect(throws: ResultsStoreError.readOnly(path: temp.path)) { try db.beginRun(sampleRun()) }
        #expect(try writer.counts(runID: id) == before)
        #expect(try db.query(sql: "SELECT COUNT(*) AS n FROM results") == QueryResult(columns: ["n"], rows: [[.int(Int64(before.results))]]))
    }

    @Test func badSQLAndBadFilesGiveOneLineErrors() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        _ = try ResultsDatabase(path: temp.path)
        let db = try ResultsDatabase.openReadOnly(path: temp.path)
        let error = #expect(throws: ResultsStoreError.self) { try db.query(sql: "SELEC * FROM runs") }
        #expect(message(error!).hasPrefix("query on \(temp.path) failed: near \"SELEC\": syntax error"))
        #expect(!message(error!).contains("\n"))
        #expect(throws: ResultsStoreError.self) { try db.query(sql: "SELECT 1; SELECT 2") }

        let text = temp.folder.appendingPathComponent("notes.txt").path
        try "not a database, just some text that is long enough to be a header".write(
            toFile: text, atomically: true, encoding: .utf8)
        let notADB = #expect(throws: ResultsStoreError.self) { try ResultsDatabase.openReadOnly(path: text) }
        #expect(message(notADB!).hasPrefix("cannot open results database \(text): file is not a database"))
        #expect(throws: ResultsStoreError.self) { try ResultsDatabase(path: text) }

        let empty = temp.folder.appendingPathComponent("empty.sqlite").path
        try Data().write(to: URL(fileURLWithPath: empty))
        #expect(throws: ResultsStoreError.schemaNotCurrent(path: empty)) { try ResultsDatabase.openReadOnly(path: empty) }
    }

    @Test func cellsKeepSQLiteTypes() throws {
        let db = try ResultsDatabase.inMemory()
        let result = try db.query(sql: "SELECT NULL AS a, 3 AS b, 2.5 AS c, 'x' AS d, x'00ff' AS e")
        #expect(result.columns == ["a", "b", "c", "d", "e"])
        #expect(result.rows == [[.null, .int(3), .double(2.5), .text("x"), .blob(Data([0, 255]))]])
        #expect(result.rows[0].map(\.description) == ["NULL", "3", "2.5", "x", "x'00ff'"])
        let json = String(decoding: try JSONEncoder().encode(result.rows[0]), as: UTF8.self)
        #expect(json == #"[null,3,2.5,"x","AP8="]"#)
    }
}
