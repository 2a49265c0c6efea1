import Foundation
import GRDB
import Support

/// What `recordMergedRun` did.
public enum MergeOutcome: Equatable, Sendable {
    /// A new run with this id holds the merged shards.
    case created(Int64)
    /// This database already held a run merged from the same shards (same provenance); nothing was written.
    case alreadyMerged(Int64)

    public var runID: Int64 {
        switch self {
        case .created(let id), .alreadyMerged(let id): id
        }
    }
}

extension ShardRow {
    /// Whether two provenance rows name the same shard run: same index and count, the same source
    /// run (its id, host, start and end time) and prompt count. The file path is not compared, so
    /// merging copies of the shard files again is recognised too.
    public func sameSource(as other: ShardRow) -> Bool {
        shardIndex == other.shardIndex && shardCount == other.shardCount && sourceRunID == other.sourceRunID
            && ownerHost == other.ownerHost && startedAt == other.startedAt && endedAt == other.endedAt
            && nPrompts == other.nPrompts
    }
}

extension ResultsDatabase {
    /// The run of this database merged from exactly `shards` (compared with `ShardRow.sameSource`)
    /// of this command, model and prompt set; nil when there is none.
    public func mergedRun(command: String, modelHash: String, promptSetHash: String, shards: [ShardRow]) throws -> Int64? {
        try read("looking for a run merged from the same shards") { db in
            try Self.mergedRun(db, command: command, modelHash: modelHash, promptSetHash: promptSetHash, shards: shards)
        }
    }

    private static func mergedRun(_ db: Database, command: String, modelHash: String, promptSetHash: String,
                                  shards: [ShardRow]) throws -> Int64? {
        let candidates = try Int64.fetchAll(db, sql: """
            SELECT r.id FROM runs r
            WHERE r.command = ? AND r.model_hash = ? AND r.prompt_set_hash = ?
              AND (SELECT COUNT(*) FROM run_shards s WHERE s.run_id = r.id) = ?
            ORDER BY r.id
            """, arguments: [command, modelHash, promptSetHash, shards.count])
        for id in candidates {
            let stored = try Row.fetchAll(db, sql: "SELECT * FROM run_shards WHERE run_id = ?", arguments: [id]).map(shardRow)
            if shards.allSatisfy({ s in stored.contains { $0.sameSource(as: s) } }) { return id }
        }
        return nil
    }

    static func shardRow(_ row: Row) throws -> ShardRow {
        func date(_ row: Row, _ column: String) throws -> Date? {
            let value: DatabaseValue = row[column] ?? .null
            if value.isNull { return nil }
            guard let date = StoredDate.decode(value) else {
                throw ResultsStoreError.sqlite(path: "run_shards", operation: "reading \(column)",
                                               message: "\(value.description.prefix(40)) is not a date")
            }
            return date
        }
        return ShardRow(shardIndex: try row.decode(forColumn: "shard_index"), shardCount: try row.decode(forColumn: "shard_count"),
                 sourcePath: try row.decode(forColumn: "source_path"), sourceRunID: try row.decode(forColumn: "source_run_id"),
                 ownerHost: try row.decode(forColumn: "owner_host"), startedAt: try date(row, "started_at") ?? Date(timeIntervalSince1970: 0),
                 endedAt: try date(row, "ended_at"), nPrompts: try row.decode(forColumn: "n_prompts"))
    }

    /// Records a run merged from shards, complete, in one transaction: the run (status
    /// `completed`, owned by `owner`), its prompts and result rows, progress markers covering
    /// exactly the prompts written, its summaries, and one `run_shards` row per shard. A run that
    /// stores no prompts (`eval`: its units are the windows of a text) has the result rows'
    /// prompt indices as its prompts, for the markers and checks. Other runs are not touched. When a run merged from the same shards (`mergedRun`) already exists,
    /// nothing is written and that run is returned (`lnlens merge` run twice stores one run).
    /// The caller computes the summaries (the store does no math).
    public func recordMergedRun(
        _ run: RunRecord, shards: [ShardRow], prompts: [PromptRow], values: [ResultRow], summaries: [SummaryRow],
        errors: [ErrorRow] = [], edges: [EdgeRow] = [], owner: ProcessIdentity = .current
    ) throws -> MergeOutcome {
        let promptIndices = try checkMerged(run, shards: shards, prompts: prompts, values: values, edges: edges)
        return try write("recording a merged \(run.command) run") { db in
            if let existing = try Self.mergedRun(db, command: run.command, modelHash: run.modelHash,
                                                 promptSetHash: run.promptSetHash, shards: shards) {
                return .alreadyMerged(existing)
            }
            var record = run
            record.id = nil
            record.ownerHost = owner.host
            record.ownerPID = owner.pid
            record.ownerStart = owner.start
            record.heartbeatAt = Date()
            try record.insert(db)
            let id = record.id!
            try Self.upsert(db, runID: id, prompts: prompts, values: values)
            for range in contiguousRanges(promptIndices) {
                try db.execute(sql: "INSERT INTO batches_done (run_id, first_prompt, last_prompt) VALUES (?, ?, ?)",
                               arguments: [id, range.lowerBound, range.upperBound])
            }
            try Self.upsert(db, runID: id, summaries: summaries)
            try Self.upsert(db, runID: id, edges: edges)
            try Self.recordStoredCounts(db, runID: id)
            try Self.upsert(db, runID: id, errors: errors)
            let statement = try db.cachedStatement(sql: """
                INSERT INTO run_shards (run_id, shard_index, shard_count, source_path, source_run_id, owner_host,
                                        started_at, ended_at, n_prompts)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            for s in shards.sorted(by: { $0.shardIndex < $1.shardIndex }) {
                try statement.execute(arguments: [id, s.shardIndex, s.shardCount, s.sourcePath, s.sourceRunID, s.ownerHost,
                                                  s.startedAt, s.endedAt, s.nPrompts])
            }
            return .created(id)
        }
    }

    /// What `recordMergedRun` refuses before writing; returns the merged run's prompt indices.
    private func checkMerged(_ run: RunRecord, shards: [ShardRow], prompts: [PromptRow], values: [ResultRow],
                             edges: [EdgeRow]) throws -> Set<Int> {
        try checkNewRun(run)
        func refuse(_ reason: String) -> ResultsStoreError { .invalidRun(path: path, reason: reason) }
        if run.status != .completed || run.endedAt == nil { throw refuse("a merged run is recorded completed, with its end time") }
        if shards.isEmpty { throw refuse("a merged run needs at least one shard") }
        if let bad = shards.first(where: { $0.shardIndex < 0 || $0.shardIndex >= $0.shardCount }) {
            throw refuse("shard \(bad.shardIndex)/\(bad.shardCount) is out of range")
        }
        if Set(shards.map(\.shardIndex)).count != shards.count { throw refuse("a shard index is given twice") }
        if let bad = prompts.first(where: { $0.promptIndex < 0 || $0.promptIndex >= run.nPrompts || $0.nTokens <= 0 }) {
            throw refuse("prompt \(bad.promptIndex) is outside 0 ..< n_prompts \(run.nPrompts) or has no tokens")
        }
        if Set(prompts.map(\.promptIndex)).count != prompts.count { throw refuse("a prompt is given twice") }
        let promptIndices = Set(prompts.isEmpty ? values.map(\.promptIndex) : prompts.map(\.promptIndex))
        if let bad = values.first(where: { !promptIndices.contains($0.promptIndex) }) {
            throw refuse("a result row names prompt \(bad.promptIndex), which is not among the merged prompts")
        }
        if let bad = promptIndices.filter({ $0 < 0 || $0 >= run.nPrompts }).min() {
            throw refuse("a result row names prompt \(bad), outside 0 ..< n_prompts \(run.nPrompts)")
        }
        try Self.checkValues(values) { refuse($0) }
        if let bad = edges.first(where: { $0.promptIndex.map { !promptIndices.contains($0) } ?? false }) {
            throw refuse("an edge row names prompt \(bad.promptIndex!), which is not among the merged prompts")
        }
        try Self.checkEdges(edges) { refuse($0) }
        return promptIndices
    }
}
