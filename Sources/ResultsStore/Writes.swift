import Foundation
import GRDB
import Support

extension ResultsDatabase {
    /// How long another host's writer may stay silent before its run counts as abandoned. The
    /// writer refreshes its heartbeat far more often (`heartbeat(runID:)`, every chunk and timer).
    public static let staleAfter: TimeInterval = 120

    /// Records a new run with status `running`, owned by `owner`, and returns its id.
    public func beginRun(_ run: RunRecord, owner: ProcessIdentity = .current) throws -> Int64 {
        try checkNewRun(run)
        var record = run
        record.id = nil
        record.status = .running
        record.endedAt = nil
        record.error = nil
        record.ownerHost = owner.host
        record.ownerPID = owner.pid
        record.ownerStart = owner.start
        record.heartbeatAt = Date()
        return try write("recording a new \(run.command) run") { db in
            try record.insert(db)
            return record.id!
        }
    }

    /// What the schema's constraints would refuse in a new run, as one-line errors.
    func checkNewRun(_ run: RunRecord) throws {
        if run.command.isEmpty { throw ResultsStoreError.invalidRun(path: path, reason: "command is empty") }
        if !StoreName.lnModes.contains(run.lnMode) {
            throw ResultsStoreError.invalidRun(
                path: path, reason: "ln_mode '\(run.lnMode)' is not one of \(StoreName.lnModes.joined(separator: ", "))")
        }
        for (name, json) in [("options_json", run.optionsJSON), ("processing_json", run.processingJSON)]
        where (try? JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])) == nil {
            throw ResultsStoreError.invalidRun(path: path, reason: "\(name) is not valid JSON")
        }
        if run.nPrompts < 0 { throw ResultsStoreError.invalidRun(path: path, reason: "n_prompts is negative") }
    }

    /// Makes `owner` the writer of run `id` again (`--resume`), in one transaction: refused while
    /// the run's owner is alive (on this host: its pid with the same start; on another host: its
    /// heartbeat younger than `staleAfter`, unless `force`), and for a completed run. Returns the
    /// run as it was before the claim.
    @discardableResult
    public func claimRun(id: Int64, owner: ProcessIdentity = .current, force: Bool = false) throws -> RunRecord {
        try write("resuming run \(id)") { db in
            let run = try Self.runRow(db, id: id, path: path)
            if run.status == .completed { throw ResultsStoreError.alreadyCompleted(id: id, path: path) }
            if run.status == .running, let current = run.owner, current != owner {
                let silent = run.heartbeatAt.map { Date().timeIntervalSince($0) } ?? .infinity
                switch current.isAlive {
                case true?:
                    throw ResultsStoreError.runOwned(id: id, path: path, owner: current, silentFor: silent, sameHost: true)
                case nil where !force && silent < Self.staleAfter:
                    throw ResultsStoreError.runOwned(id: id, path: path, owner: current, silentFor: silent, sameHost: false)
                default:
                    break  // dead (kill -9, crash, reboot) or abandoned on another host
                }
            }
            try db.execute(
                sql: """
                    UPDATE runs SET status = 'running', ended_at = NULL, error = NULL, owner_host = ?, owner_pid = ?,
                                    owner_start = ?, heartbeat_at = ? WHERE id = ?
                    """,
                arguments: [owner.host, owner.pid, owner.start, Date(), id])
            return run
        }
    }

    /// The run, checked to be `running` and written by `owner` (inside a write transaction).
    func ownedRun(_ db: Database, id: Int64, owner: ProcessIdentity) throws -> RunRecord {
        let run = try Self.runRow(db, id: id, path: path)
        if run.status != .running { throw ResultsStoreError.runNotRunning(id: id, status: run.status, path: path) }
        if let current = run.owner, current != owner {
            throw ResultsStoreError.runTakenOver(id: id, path: path, owner: current)
        }
        return run
    }

    /// Stores one chunk: its prompts, its result rows and the marker that prompts
    /// `firstPrompt...lastPrompt` are done, all in one transaction (all or nothing). Rewriting keys
    /// already stored replaces their values, so a resumed chunk yields the same rows. The run must
    /// be `running` and owned by `owner`; every row's prompt index must lie in the chunk's range.
    public func writeBatch(
        runID: Int64, prompts: [PromptRow], values: [ResultRow], firstPrompt: Int, lastPrompt: Int,
        owner: ProcessIdentity = .current
    ) throws {
        if firstPrompt < 0 || lastPrompt < firstPrompt {
            throw ResultsStoreError.invalidBatch(
                id: runID, reason: "prompt range \(firstPrompt)...\(lastPrompt) is empty or negative", path: path)
        }
        try writeBatch(runID: runID, prompts: prompts, values: values, ranges: [firstPrompt...lastPrompt], owner: owner)
    }

    /// Stores one chunk whose prompts are the union of `ranges` (a shard's chunk is not one run of
    /// consecutive prompts): one marker per range, so that each marker covers exactly the prompts
    /// it names. Otherwise as `writeBatch(runID:prompts:values:firstPrompt:lastPrompt:owner:)`.
    public func writeBatch(
        runID: Int64, prompts: [PromptRow], values: [ResultRow], edges: [EdgeRow] = [], ranges: [ClosedRange<Int>],
        owner: ProcessIdentity = .current
    ) throws {
        let label = ranges.map { "\($0.lowerBound)...\($0.upperBound)" }.joined(separator: ", ")
        func inBatch(_ i: Int) -> Bool { ranges.contains { $0.contains(i) } }
        func refuse(_ reason: String) -> ResultsStoreError {
            .invalidBatch(id: runID, reason: reason, path: path)
        }
        guard let lastPrompt = ranges.map(\.upperBound).max() else { throw refuse("no prompt range given") }
        if let bad = ranges.first(where: { $0.lowerBound < 0 }) {
            throw refuse("prompt range \(bad.lowerBound)...\(bad.upperBound) is negative")
        }
        if let bad = prompts.first(where: { !inBatch($0.promptIndex) }) {
            throw refuse("prompt \(bad.promptIndex) lies outside the batch \(label)")
        }
        if let bad = prompts.first(where: { $0.nTokens <= 0 }) {
            throw refuse("prompt \(bad.promptIndex) has n_tokens \(bad.nTokens)")
        }
        if let bad = values.first(where: { !inBatch($0.promptIndex) }) {
            throw refuse("result for prompt \(bad.promptIndex) lies outside the batch \(label)")
        }
        try Self.checkValues(values, refuse: refuse)
        if let bad = edges.first(where: { $0.promptIndex.map { !inBatch($0) } ?? true }) {
            throw refuse("edge row for prompt \(bad.promptIndex.map(String.init) ?? "(aggregate)") lies outside the batch \(label)")
        }
        try Self.checkEdges(edges, refuse: refuse)
        try write("writing prompts \(label) of run \(runID)") { db in
            let run = try ownedRun(db, id: runID, owner: owner)
            if lastPrompt >= run.nPrompts {
                throw refuse("prompt \(lastPrompt) is past the run's n_prompts \(run.nPrompts)")
            }
            try Self.upsert(db, runID: runID, prompts: prompts, values: values)
            try Self.upsert(db, runID: runID, edges: edges)
            for range in ranges {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO batches_done (run_id, first_prompt, last_prompt) VALUES (?, ?, ?)",
                    arguments: [runID, range.lowerBound, range.upperBound])
            }
            try db.execute(sql: "UPDATE runs SET heartbeat_at = ? WHERE id = ?", arguments: [Date(), runID])
        }
    }

    /// Rows the schema would take but no reader should see: NaN values, empty names, negative indices.
    static func checkValues(_ values: [ResultRow], refuse: (String) -> ResultsStoreError) throws {
        if let bad = values.first(where: { $0.value.isNaN }) {
            throw refuse("\(bad.quantity) of \(bad.site) for prompt \(bad.promptIndex) is NaN")
        }
        if let bad = values.first(where: { $0.site.isEmpty || $0.quantity.isEmpty }) {
            throw refuse("result for prompt \(bad.promptIndex) has an empty site or quantity name")
        }
        if let bad = values.first(where: { ($0.layer ?? 0) < 0 || ($0.position ?? 0) < 0 || ($0.head ?? 0) < 0 }) {
            throw refuse("result for prompt \(bad.promptIndex) at \(bad.site) has a negative layer, position or head")
        }
    }

    /// Inserts or replaces prompts and result rows of a run (inside a write transaction).
    static func upsert(_ db: Database, runID: Int64, prompts: [PromptRow], values: [ResultRow]) throws {
        let promptStatement = try db.cachedStatement(sql: """
            INSERT INTO run_prompts (run_id, prompt_index, prompt, answer, wrong, n_tokens, corrupt, tokens_json)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, prompt_index) DO UPDATE SET
              prompt = excluded.prompt, answer = excluded.answer, wrong = excluded.wrong,
              n_tokens = excluded.n_tokens, corrupt = excluded.corrupt, tokens_json = excluded.tokens_json
            """)
        for p in prompts {
            let tokens = try p.tokens.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
            try promptStatement.execute(arguments: [runID, p.promptIndex, p.prompt, p.answer, p.wrong, p.nTokens,
                                                    p.corrupt, tokens])
        }
        let valueStatement = try db.cachedStatement(sql: """
            INSERT INTO results (run_id, prompt_index, site, layer, position, head, quantity, value)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, prompt_index, site, ifnull(layer, -1), ifnull(position, -1), ifnull(head, -1), quantity)
            DO UPDATE SET value = excluded.value
            """)
        for v in values {
            try valueStatement.execute(arguments: [runID, v.promptIndex, v.site, v.layer, v.position, v.head,
                                                   v.quantity, v.value])
        }
    }

    /// Appends (or rewrites) optimizer steps of a training run owned by `owner`, in one transaction.
    public func writeTrainSteps(runID: Int64, steps: [TrainStepRow], owner: ProcessIdentity = .current) throws {
        if let bad = steps.first(where: { !$0.loss.isFinite || $0.step < 0 }) {
            throw ResultsStoreError.invalidBatch(id: runID, reason: "step \(bad.step) has loss \(bad.loss)", path: path)
        }
        try write("writing training steps of run \(runID)") { db in
            _ = try ownedRun(db, id: runID, owner: owner)
            let statement = try db.cachedStatement(sql: """
                INSERT INTO train_steps (run_id, step, loss, aux_loss, lr, grad_norm, tokens, seconds, event)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id, step) DO UPDATE SET loss = excluded.loss, aux_loss = excluded.aux_loss,
                  lr = excluded.lr, grad_norm = excluded.grad_norm, tokens = excluded.tokens,
                  seconds = excluded.seconds, event = excluded.event
                """)
            for s in steps {
                try statement.execute(arguments: [runID, s.step, s.loss, s.auxLoss, s.lr, s.gradNorm, s.tokens,
                                                  s.seconds, s.event])
            }
            try db.execute(sql: "UPDATE runs SET heartbeat_at = ? WHERE id = ?", arguments: [Date(), runID])
        }
    }

    /// Shows that `owner` is still working on the run (called on a timer by long jobs).
    public func heartbeat(runID: Int64, owner: ProcessIdentity = .current) throws {
        try write("refreshing run \(runID)") { db in
            _ = try ownedRun(db, id: runID, owner: owner)
            try db.execute(sql: "UPDATE runs SET heartbeat_at = ? WHERE id = ?", arguments: [Date(), runID])
        }
    }

    /// Ends a run: its final status, end time and error, its summaries and estimator errors, in one
    /// transaction. Only the run's owner may end it.
    public func finishRun(runID: Int64, status: RunStatus, summaries: [SummaryRow], errors: [ErrorRow] = [],
                          edges: [EdgeRow] = [], error: String?, owner: ProcessIdentity = .current) throws {
        if status == .running { throw ResultsStoreError.finishWithRunning(id: runID, path: path) }
        try Self.checkEdges(edges) { .invalidBatch(id: runID, reason: $0, path: path) }
        try write("finishing run \(runID)") { db in
            _ = try ownedRun(db, id: runID, owner: owner)
            try Self.upsert(db, runID: runID, summaries: summaries)
            try Self.upsert(db, runID: runID, errors: errors)
            try Self.upsert(db, runID: runID, edges: edges)
            if status == .completed { try Self.recordStoredCounts(db, runID: runID) }
            try db.execute(
                sql: "UPDATE runs SET status = ?, ended_at = ?, error = ?, heartbeat_at = ? WHERE id = ?",
                arguments: [status.rawValue, Date(), error, Date(), runID])
        }
    }

    /// Records how many result and prompt rows the run holds now (summaries `check/stored/…`),
    /// inside the transaction that completes it.
    static func recordStoredCounts(_ db: Database, runID: Int64) throws {
        let (results, prompts) = try storedCounts(db, runID: runID)
        try upsert(db, runID: runID, summaries: [
            SummaryRow(scope: StoreName.scopeCheck, key: StoreName.storedCounts, metric: StoreName.storedResults, value: Double(results)),
            SummaryRow(scope: StoreName.scopeCheck, key: StoreName.storedCounts, metric: StoreName.storedPrompts, value: Double(prompts)),
        ])
        // Only runs that store edges record their count (the other commands' summaries stay as they were).
        let edges = try storedEdgeCount(db, runID: runID)
        if edges > 0 {
            try upsert(db, runID: runID, summaries: [
                SummaryRow(scope: StoreName.scopeCheck, key: StoreName.storedCounts, metric: StoreName.storedEdges, value: Double(edges)),
            ])
        }
    }

    /// The run's `edges` rows.
    static func storedEdgeCount(_ db: Database, runID: Int64) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM edges WHERE run_id = ?", arguments: [runID]) ?? 0
    }

    /// Edge rows the schema would take but no reader should see: NaN values, empty names, an input
    /// other than q/k/v, an aggregate without its prompt count or a per-prompt row with one.
    static func checkEdges(_ edges: [EdgeRow], refuse: (String) -> ResultsStoreError) throws {
        for e in edges {
            let what = "edge \(e.edgeKey) of prompt \(e.promptIndex.map(String.init) ?? "(aggregate)")"
            if e.value.isNaN { throw refuse("\(what) is NaN") }
            if e.upstream.isEmpty || e.downstream.isEmpty || e.method.isEmpty { throw refuse("\(what) has an empty name") }
            if let input = e.input, !["q", "k", "v"].contains(input) { throw refuse("\(what) has input \(input), not q, k or v") }
            if (e.promptIndex ?? 0) < 0 { throw refuse("\(what) has a negative prompt index") }
            if (e.promptIndex == nil) != (e.nPrompts != nil) || (e.nPrompts ?? 1) < 1 {
                throw refuse("\(what): an aggregate row (no prompt) needs n_prompts ≥ 1, a per-prompt row none")
            }
        }
    }

    /// Inserts or replaces edge rows of a run (inside a write transaction).
    static func upsert(_ db: Database, runID: Int64, edges: [EdgeRow]) throws {
        if edges.isEmpty { return }
        let statement = try db.cachedStatement(sql: """
            INSERT INTO edges (run_id, prompt_index, upstream, downstream, input, method, value, n_prompts)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, ifnull(prompt_index, -1), upstream, downstream, ifnull(input, ''), method)
            DO UPDATE SET value = excluded.value, n_prompts = excluded.n_prompts
            """)
        for e in edges {
            try statement.execute(arguments: [runID, e.promptIndex, e.upstream, e.downstream, e.input, e.method, e.value, e.nPrompts])
        }
    }

    /// The run's `results` and `run_prompts` rows as the readers find them (through the keys).
    static func storedCounts(_ db: Database, runID: Int64) throws -> (results: Int, prompts: Int) {
        let results = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM results WHERE run_id = ?", arguments: [runID]) ?? 0
        let prompts = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM run_prompts WHERE run_id = ?", arguments: [runID]) ?? 0
        return (results, prompts)
    }

    /// Inserts or replaces estimator errors of a run (inside a write transaction).
    static func upsert(_ db: Database, runID: Int64, errors: [ErrorRow]) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO estimator_errors (run_id, site, method, layer, normalized, metric, value)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, site, method, ifnull(layer, -1), normalized, metric) DO UPDATE SET value = excluded.value
            """)
        for e in errors {
            try statement.execute(arguments: [runID, e.site, e.method, e.layer, e.normalized ? 1 : 0, e.metric,
                                              e.value.isNaN ? nil : e.value])
        }
    }

    /// Inserts or replaces summaries of a run (inside a write transaction).
    static func upsert(_ db: Database, runID: Int64, summaries: [SummaryRow]) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO summaries (run_id, scope, key, metric, value) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (run_id, scope, key, metric) DO UPDATE SET value = excluded.value
            """)
        for s in summaries {
            // SQLite stores NaN as NULL: an undefined metric.
            try statement.execute(arguments: [runID, s.scope, s.key, s.metric, s.value.isNaN ? nil : s.value])
        }
    }
}
