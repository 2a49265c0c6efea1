import Foundation
import GPT2
import ResultsStore
import Support
import Training

/// A `train` or `remove-ln` run: the trainer's steps stored one row each as they finish, a
/// checkpoint every `checkpointEvery` steps and at the end, the model written by `export`, the
/// run completed with its final numbers. After any interruption (`kill -9` included) `resume`
/// continues from the newest checkpoint with bit-identical parameters: the steps after it are
/// recomputed and their rows rewritten.
public struct TrainJob {
    public var trainer: Trainer
    /// `train` or `remove-ln`.
    public var command: String
    public var modelPath: String
    public var modelHash: String
    public var optionsJSON: String
    public var toolVersion: String
    /// The output folder (checkpoints under `checkpoints/`, the model written by `export`).
    public var out: URL
    public var checkpointEvery: Int
    public var keepCheckpoints = false
    public var forceResume = false
    /// Writes the trained model into `out` (called once, after the last step).
    public var export: (Trainer) throws -> Void

    public init(trainer: Trainer, command: String, modelPath: String, modelHash: String, optionsJSON: String,
                toolVersion: String, out: URL, checkpointEvery: Int, export: @escaping (Trainer) throws -> Void) {
        self.trainer = trainer
        self.command = command
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.optionsJSON = optionsJSON
        self.toolVersion = toolVersion
        self.out = out
        self.checkpointEvery = checkpointEvery
        self.export = export
    }

    /// Runs (or with `resume`, continues from `out`'s newest checkpoint) to the last step and
    /// returns the run's id. `progress` sees every step and may throw `JobStop` to stop after it
    /// (a checkpoint is written first).
    @discardableResult
    public func run(db: ResultsDatabase, resume: Bool, progress: (StepReport) throws -> Void = { _ in }) throws -> Int64 {
        let corpusHash = trainer.corpus.hash
        var runID: Int64
        var secondsBefore = 0.0
        if resume {
            guard let folder = TrainingCheckpoint.latest(out: out) else {
                throw TrainingError.checkpointMissing(directory: out.path)
            }
            let state = try TrainingCheckpoint.read(folder)
            try check(state, folder: folder, corpusHash: corpusHash)
            guard let id = state.runID else {
                throw TrainingError.checkpointCorrupt(file: folder.path, reason: "it names no stored run")
            }
            let record = try db.run(id: id)
            guard let record, record.command == command else {
                throw TrainingError.checkpointMismatch(directory: out.path, option: "the stored run", stored: "\(id)",
                                                       now: "no \(command) run \(id) in \(db.path)")
            }
            if record.status == .completed { return id }
            _ = try db.claimRun(id: id, force: forceResume)
            try state.restore(into: trainer, from: folder)
            runID = id
            secondsBefore = state.seconds
        } else {
            runID = try db.beginRun(RunRecord(
                command: command, optionsJSON: optionsJSON, modelPath: modelPath, modelHash: modelHash,
                lnMode: trainer.model.lnMode.rawValue, processingJSON: "{}", promptSetPath: trainer.corpus.path,
                promptSetHash: corpusHash, nPrompts: trainer.settings.steps, toolVersion: toolVersion, shard: nil))
            // A checkpoint of step 0 at once: a run killed before its first regular checkpoint
            // resumes too (from the start, under the same run id).
            try TrainingCheckpoint.save(trainer, out: out, runID: runID, corpusHash: corpusHash, seconds: 0)
        }
        let id = runID
        let started = DispatchTime.now().uptimeNanoseconds
        func seconds() -> Double { secondsBefore + Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9 }
        func checkpoint() throws {
            try TrainingCheckpoint.save(trainer, out: out, runID: id, corpusHash: corpusHash, seconds: seconds())
        }
        var last: StepReport?
        try RunLifecycle.execute(db: db, runID: id, total: trainer.settings.steps, doneCount: { trainer.step }, {
            while trainer.step < trainer.settings.steps {
                let report = try trainer.runStep()
                last = report
                try db.writeTrainSteps(runID: id, steps: [Self.row(report)])
                if trainer.step % checkpointEvery == 0 || trainer.step == trainer.settings.steps { try checkpoint() }
                do {
                    try progress(report)
                } catch let stop as JobStop {
                    if trainer.step % checkpointEvery != 0 { try checkpoint() }
                    throw stop
                }
            }
            if last == nil, TrainingCheckpoint.latest(out: out) == nil { try checkpoint() }
            try export(trainer)
            if !keepCheckpoints { try? FileManager.default.removeItem(at: TrainingCheckpoint.directory(out: out)) }
        }, finish: { (try summaries(db: db, runID: id, seconds: seconds()), []) })
        return id
    }

    func check(_ state: TrainingCheckpoint, folder: URL, corpusHash: String) throws {
        func mismatch(_ option: String, _ stored: String, _ now: String) -> TrainingError {
            .checkpointMismatch(directory: folder.path, option: option, stored: stored, now: now)
        }
        guard state.corpusHash == corpusHash else { throw mismatch("--corpus (tokens hash)", state.corpusHash, corpusHash) }
        let a = state.settings, b = trainer.settings
        if a == b {
            if let ln = trainer.layerNorms, let stored = state.layerNorms {
                guard ln.schedule == stored.schedule, ln.keepLN == stored.keepLN, ln.momentum == stored.momentum else {
                    throw mismatch("the LayerNorm removal schedule", "\(stored.schedule)", "\(ln.schedule)")
                }
            } else if (trainer.layerNorms == nil) != (state.layerNorms == nil) {
                throw mismatch("LayerNorm removal", state.layerNorms == nil ? "off" : "on", trainer.layerNorms == nil ? "off" : "on")
            }
            return
        }
        let pairs: [(String, String, String)] = [
            ("--seq-len", "\(a.seqLen)", "\(b.seqLen)"), ("--batch-tokens", "\(a.tokensPerStep)", "\(b.tokensPerStep)"),
            ("--micro-batch", "\(a.microBatch)", "\(b.microBatch)"), ("--steps", "\(a.steps)", "\(b.steps)"),
            ("--seed", "\(a.seed)", "\(b.seed)"), ("--lr", "\(a.learningRate)", "\(b.learningRate)"),
            ("AdamW settings", "\(a.adamW)", "\(b.adamW)"), ("--max-grad-norm", "\(a.maxGradNorm)", "\(b.maxGradNorm)"),
            ("--aux-weight", "\(a.auxWeight)", "\(b.auxWeight)"),
        ]
        let (option, stored, now) = pairs.first { $0.1 != $0.2 } ?? ("settings", "\(a)", "\(b)")
        throw mismatch(option, stored, now)
    }

    static func row(_ r: StepReport) -> TrainStepRow {
        TrainStepRow(step: r.step, loss: r.loss, auxLoss: r.auxLoss, lr: r.learningRate, gradNorm: r.gradNorm, tokens: r.tokens,
                     seconds: r.seconds, event: r.removals.isEmpty ? nil : r.removals.map(\.event).joined(separator: "; "))
    }

    /// `train` summaries: the mean loss of the last 10 steps, tokens, seconds; for `remove-ln`
    /// also each LayerNorm's frozen σ (scope `sigma`, key the LayerNorm).
    func summaries(db: ResultsDatabase, runID: Int64, seconds: Double) throws -> [SummaryRow] {
        let steps = try db.trainSteps(runID: runID)
        let tail = steps.suffix(10)
        var rows = [
            SummaryRow(scope: "train", key: "final", metric: "loss_last10", value: tail.map(\.loss).reduce(0, +) / Double(max(1, tail.count))),
            SummaryRow(scope: "train", key: "final", metric: "tokens", value: Double(steps.last?.tokens ?? 0)),
            SummaryRow(scope: "train", key: "final", metric: "seconds", value: seconds),
        ]
        if let ln = trainer.layerNorms {
            for b in 0..<ln.schedule.nLayers {
                if let s = ln.ln1Sigma[b] { rows.append(SummaryRow(scope: "sigma", key: "h.\(b).ln_1", metric: "sigma", value: s)) }
                if let s = ln.ln2Sigma[b] { rows.append(SummaryRow(scope: "sigma", key: "h.\(b).ln_2", metric: "sigma", value: s)) }
            }
            if let s = ln.lnFinalSigma { rows.append(SummaryRow(scope: "sigma", key: "ln_f", metric: "sigma", value: s)) }
        }
        return rows
    }
}

/// An `eval` run: each model's next-token loss on one text, window by window. Stored: one
/// `results` row per model and window (`prompt_index` the window's index in the whole text,
/// `site` the model as given, quantity `loss`, no layer, position or head), and per model the
/// `summaries` computed from those rows (scope `eval`, key the model, metrics `loss`, `ci_low`,
/// `ci_high`, `windows`). With a `shard` the run scores only that shard's windows, under their
/// indices in the whole text, and its summaries cover those; `MergeJob` combines the shards' runs.
public struct EvalJob {
    public struct Entry {
        public var name: String
        public var model: GPT2Model
        public var hash: String
        public init(name: String, model: GPT2Model, hash: String) {
            self.name = name
            self.model = model
            self.hash = hash
        }
    }

    public var entries: [Entry]
    public var text: TokenCorpus
    public var context: Int
    public var batch: Int
    public var optionsJSON: String
    public var toolVersion: String
    /// Only this shard of the text's windows (nil: all of them). Recorded with the run.
    public var shard: Shard?

    public init(entries: [Entry], text: TokenCorpus, context: Int, batch: Int, optionsJSON: String, toolVersion: String) {
        self.entries = entries
        self.text = text
        self.context = context
        self.batch = batch
        self.optionsJSON = optionsJSON
        self.toolVersion = toolVersion
    }

    /// Options (keys of `optionsJSON`) that change the stored numbers: shards merge only when
    /// they agree on them. `batch` is among them because the windows that share a forward pass
    /// move a window's loss in the last float digits; with `batch` 1 every window's loss is the
    /// same in any shard, so the merged run equals the unsharded one bit for bit.
    public static let resultOptionKeys = ["context", "batch"]

    /// Evaluates every model and stores one run; returns its id and the results in model order.
    public func run(db: ResultsDatabase, progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> (Int64, [EvalResult]) {
        let first = entries[0]
        for e in entries { try Evaluation.validate(model: e.model, text: text, context: context) }
        let n = text.blockCount(seqLen: context)
        let windows = shard.map { $0.select(Array(0..<n)) } ?? Array(0..<n)
        if let shard, windows.isEmpty {
            throw ShardError.invalid(source: "--shard", value: shard.description,
                                     reason: "the text has only \(n) window\(n == 1 ? "" : "s") of \(context) tokens: use at most \(n) shards")
        }
        let id = try db.beginRun(RunRecord(
            command: StoreName.evalCommand, optionsJSON: optionsJSON, modelPath: entries.map(\.name).joined(separator: " | "),
            modelHash: entries.map(\.hash).joined(separator: ","), lnMode: first.model.lnMode.rawValue, processingJSON: "{}",
            promptSetPath: text.path, promptSetHash: text.hash, nPrompts: n, toolVersion: toolVersion,
            shard: shard.map { ($0.index, $0.count) }))
        var results: [EvalResult] = []
        try RunLifecycle.execute(db: db, runID: id, total: entries.count, doneCount: { results.count }, {
            for e in entries {
                results.append(try Evaluation.loss(model: e.model, text: text, context: context, windows: windows, batch: batch) {
                    progress(e.name, $0, $1)
                })
            }
            let rows = zip(entries, results).flatMap { e, r in
                r.windowLosses.map { ResultRow(promptIndex: $0.window, site: e.name, quantity: StoreName.loss, value: $0.loss) }
            }
            try db.writeBatch(runID: id, prompts: [], values: rows, ranges: contiguousRanges(windows))
        }, finish: { (Self.summaries(from: try db.results(runID: id)), []) })
        return (id, results)
    }

    /// The summaries of an eval run with these result rows (in any order): per model (`site`),
    /// `Evaluation.summary` of its windows' losses in window order. What a run stores when it
    /// finishes, and what `MergeJob` stores for shards merged into one run.
    public static func summaries(from stored: [ResultRow]) -> [SummaryRow] {
        let byModel = Dictionary(grouping: stored.filter { $0.quantity == StoreName.loss }, by: \.site)
        return byModel.keys.sorted().flatMap { model -> [SummaryRow] in
            let losses = byModel[model]!.sorted { $0.promptIndex < $1.promptIndex }.map(\.value)
            let s = Evaluation.summary(losses: losses)
            return [SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.loss, value: s.loss),
                    SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.ciLow, value: s.ciLow),
                    SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.ciHigh, value: s.ciHigh),
                    SummaryRow(scope: StoreName.scopeEval, key: model, metric: "windows", value: Double(losses.count))]
        }
    }
}
