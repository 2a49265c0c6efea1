import Foundation
import GRDB

extension ResultsDatabase {
    /// Records a new run with status `running` and returns its id.
    public func beginRun(_ run: NewRun) throws -> Int64 {
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
        return try write("recording a new \(run.command) run") { db in
            try db.execute(
                sql: """
                    INSERT INTO runs (command, options_json, model_path, model_hash, ln_mode, processing_json,
                                      prompt_set_path, prompt_set_hash, n_prompts, tool_version, started_at, status)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')
                    """,
                arguments: [
                    run.command, run.optionsJSON, run.modelPath, run.modelHash, run.lnMode, run.processingJSON,
                    run.promptSetPath, run.promptSetHash, run.nPrompts, run.toolVersion, run.startedAt,
                ])
            return db.lastInsertedRowID
        }
    }

    /// Stores one batch: its prompts, its result rows and the marker that prompts
    /// `firstPrompt...lastPrompt` are done, all in one transaction (all or nothing). Rewriting
    /// keys already stored replaces their values, so a resumed batch yields the same rows.
    /// The run must be `running`; every row's prompt index must lie in the batch's range.
    public func writeBatch(
        runID: Int64, prompts: [PromptRow], values: [ResultRow], firstPrompt: Int, lastPrompt: Int
    ) throws {
        let range = firstPrompt...max(firstPrompt, lastPrompt)
        func refuse(_ reason: String) -> ResultsStoreError {
            .invalidBatch(id: runID, reason: reason, path: path)
        }
        if firstPrompt < 0 || lastPrompt < firstPrompt {
            throw refuse("prompt range \(firstPrompt)...\(lastPrompt) is empty or negative")
        }
        if let bad = prompts.first(where: { !range.contains($0.promptIndex) }) {
            throw refuse("prompt \(bad.promptIndex) lies outside the batch \(firstPrompt)...\(lastPrompt)")
        }
        if let bad = prompts.first(where: { $0.nTokens <= 0 }) {
            throw refuse("prompt \(bad.promptIndex) has n_tokens \(bad.nTokens)")
        }
        if let bad = values.first(where: { !range.contains($0.promptIndex) }) {
            throw refuse("result for prompt \(bad.promptIndex) lies outside the batch \(firstPrompt)...\(lastPrompt)")
        }
        if let bad = values.first(where: { $0.value.isNaN }) {
            throw refuse("\(bad.quantity) of \(bad.component) for prompt \(bad.promptIndex) is NaN")
        }
        if let bad = values.first(where: { $0.component.isEmpty || $0.quantity.isEmpty }) {
            throw refuse("result for prompt \(bad.promptIndex) has an empty component or quantity name")
        }
        try write("writing prompts \(firstPrompt)...\(lastPrompt) of run \(runID)") { db in
            let run = try Self.runRow(db, id: runID, path: path)
            if run.status != .running {
                throw ResultsStoreError.runNotRunning(id: runID, status: run.status, path: path)
            }
            if lastPrompt >= run.nPrompts {
                throw refuse("prompt \(lastPrompt) is past the run's n_prompts \(run.nPrompts)")
            }
            let promptStatement = try db.cachedStatement(sql: """
                INSERT INTO run_prompts (run_id, prompt_index, prompt, answer, wrong, n_tokens)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id, prompt_index) DO UPDATE SET
                  prompt = excluded.prompt, answer = excluded.answer,
                  wrong = excluded.wrong, n_tokens = excluded.n_tokens
                """)
            for p in prompts {
                try promptStatement.execute(arguments: [runID, p.promptIndex, p.prompt, p.answer, p.wrong, p.nTokens])
            }
            let valueStatement = try db.cachedStatement(sql: """
                INSERT INTO results (run_id, prompt_index, component, quantity, value) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (run_id, prompt_index, component, quantity) DO UPDATE SET value = excluded.value
                """)
            for v in values {
                try valueStatement.execute(arguments: [runID, v.promptIndex, v.component, v.quantity, v.value])
            }
            try db.execute(
                sql: "INSERT OR IGNORE INTO batches_done (run_id, first_prompt, last_prompt) VALUES (?, ?, ?)",
                arguments: [runID, firstPrompt, lastPrompt])
        }
    }

    /// Ends a run: sets its final status, end time and error, and stores its summaries, in one
    /// transaction.
    public func finishRun(runID: Int64, status: RunStatus, summaries: [SummaryRow], error: String?) throws {
        if status == .running { throw ResultsStoreError.finishWithRunning(id: runID, path: path) }
        try write("finishing run \(runID)") { db in
            _ = try Self.runRow(db, id: runID, path: path)
            let statement = try db.cachedStatement(sql: """
                INSERT INTO summaries (run_id, scope, key, metric, value) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (run_id, scope, key, metric) DO UPDATE SET value = excluded.value
                """)
            for s in summaries {
                // SQLite stores NaN as NULL: an undefined metric.
                try statement.execute(arguments: [runID, s.scope, s.key, s.metric, s.value.isNaN ? nil : s.value])
            }
            try db.execute(
                sql: "UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE id = ?",
                arguments: [status.rawValue, Date(), error, runID])
        }
    }

    /// Sets a run back to `running` (end time and error cleared) so that its missing batches can
    /// be written. The caller decides that the run is dead; a completed run is refused.
    public func markResumed(runID: Int64) throws {
        try write("resuming run \(runID)") { db in
            let run = try Self.runRow(db, id: runID, path: path)
            if run.status == .completed { throw ResultsStoreError.alreadyCompleted(id: runID, path: path) }
            try db.execute(
                sql: "UPDATE runs SET status = 'running', ended_at = NULL, error = NULL WHERE id = ?",
                arguments: [runID])
        }
    }
}
