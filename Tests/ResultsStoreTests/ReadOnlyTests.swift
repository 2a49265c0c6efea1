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

    /// A writer killed while GRDB switched a new file to WAL leaves page 1 and a hot rollback
    /// journal. Readers say how to recover it; the next writer rolls it back (SQLite's own
    /// recovery) and goes on, instead of refusing the file for ever.
    @Test func hotJournalOfAKilledWriterIsRecovered() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        try FileManager.default.createDirectory(at: temp.folder, withIntermediateDirectories: true)
        try DatabaseQueue(path: temp.path).writeWithoutTransaction { try $0.execute(sql: "PRAGMA journal_mode=WAL") }
        // The journal header SQLite writes before changing page 1 of an empty file (as found
        // after such a kill): magic, nRec 0, nonce, initial size 0 pages, sector 512, page 4096.
        var journal: [UInt8] = [0xD9, 0xD5, 0x05, 0xF9, 0x20, 0xA1, 0x63, 0xD7, 0, 0, 0, 0, 0x2C, 0x76, 0x4A, 0x44,
                                0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0x10, 0]
        journal += [UInt8](repeating: 0, count: 512 - journal.count)
        try Data(journal).write(to: URL(fileURLWithPath: temp.path + "-journal"))
        let error = #expect(throws: ResultsStoreError.self) { try ResultsDatabase.openReadOnly(path: temp.path) }
        #expect(message(error!).contains("lnlens migrate --db \(temp.path)"), "\(message(error!))")
        let writer = try ResultsDatabase(path: temp.path)
        _ = try SyntheticRun(label: "after", batches: 1, promptsPerBatch: 2).write(to: writer)
        #expect(!FileManager.default.fileExists(atPath: temp.path + "-journal"))
        #expect(try ResultsDatabase.openReadOnly(path: temp.path).runs().count == 1)
    }

    /// A file left empty by a writer killed as it created it: readers give up after 2 s, not 60.
    @Test func emptyFileIsRefusedQuickly() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        try FileManager.default.createDirectory(at: temp.folder, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: temp.path, contents: Data())
        let start = Date()
        #expect(throws: ResultsStoreError.self) { try ResultsDatabase.openReadOnly(path: temp.path) }
        #expect(Date().timeIntervalSince(start) < 10)
    }
}
