import Foundation
import GRDB
import Testing
@testable import ResultsStore

/// A damaged or hand-edited date cell is a decoding error, never a crash (the sqlite fuzz target
/// found GRDB's date parser trapping on a long run of digits).
@Suite struct DamagedCellTests {
    @Test func datesThatAreNotDatesAreRefused() throws {
        #expect(StoredDate.isDateText("2026-12-04 16:42:36.471"))
        #expect(StoredDate.isDateText("2026-12-04"))
        #expect(StoredDate.isDateText("2026-12-04T16:42"))
        #expect(!StoredDate.isDateText("99999999999999999999999-12-04 16:42:36.471"))
        #expect(!StoredDate.isDateText("2026-12-04 16:42:36.4719999999999999999999"))
        #expect(!StoredDate.isDateText("yesterday"))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-damaged-\(UUID().uuidString).sqlite")
        defer { try? FileManager.default.removeItem(at: url) }
        try FileManager.default.copyItem(at: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("fuzz/corpus/sqlite/dla.sqlite"), to: url)
        try DatabaseQueue(path: url.path).write { db in
            try db.execute(sql: "UPDATE runs SET started_at = '9999999999999999999999999-01-01 00:00:00.000'")
        }
        let db = try ResultsDatabase.openReadOnly(path: url.path)
        #expect(throws: ResultsStoreError.self) { _ = try db.runs() }
        #expect(throws: ResultsStoreError.self) { _ = try db.verifiedRun(id: 1) }
    }

    @Test func aBatchRangeThatIsNotOneIsRefused() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-damaged-\(UUID().uuidString).sqlite")
        defer { try? FileManager.default.removeItem(at: url) }
        try FileManager.default.copyItem(at: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("fuzz/corpus/sqlite/dla.sqlite"), to: url)
        try DatabaseQueue(path: url.path).write { db in
            try db.execute(sql: "PRAGMA ignore_check_constraints = ON")  // as a damaged page can
            try db.execute(sql: "UPDATE batches_done SET first_prompt = 5, last_prompt = 2")
        }
        let db = try ResultsDatabase.openReadOnly(path: url.path)
        #expect(throws: ResultsStoreError.self) { _ = try db.completedPromptIndices(runID: 1) }
    }
}
