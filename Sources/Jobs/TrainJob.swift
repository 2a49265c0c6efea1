import Distributed
import Foundation
import GPT2
import ResultsStore
import Support
import Training

/// A `train` or `remove-ln` run: the trainer's steps stored one row each as they finish, a
/// checkpoint every `checkpointEvery` steps and at the end (with `keepAll` every one kept,
/// exportable by `TrainingCheckpoint.exportStep`), the model written by `export`, the run
/// completed with its final numbers. After any interruption (`kill -9` included) `resume`
/// continues from the newest checkpoint with bit-identical parameters: the steps after it are
/// recomputed and their rows rewritten.
public struct TrainJob {
    public var trainer: Trainer
    /// `train` or `remove-ln`.
    public var command: String
    public var modelPath: String
    public var modelHash: String
    public var options: TrainOptions
    public var toolVersion: String
    /// The output folder (checkpoints under `checkpoints/`, the model written by `export`).
    public var out: URL
    public var checkpointEvery: Int
    /// Keep the newest checkpoint once training ends (`--keep-checkpoints`).
    public var keepCheckpoints = false
    /// Keep every checkpoint, older ones without AdamW's moments (`--keep-all`).
    public var keepAll = false
    /// Tokenizer files copied into each checkpoint (so that `export --step` writes a whole model).
    public var tokenizerDirectory: URL?
    public var forceResume = false
    /// Writes the trained model into `out` (called once, after the last step).
    public var export: (Trainer) throws -> Void

    public init(trainer: Trainer, command: String, modelPath: String, modelHash: String, options: TrainOptions,
                toolVersion: String, out: URL, checkpointEvery: Int, export: @escaping (Trainer) throws -> Void) {
        self.trainer = trainer
        self.command = command
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.options = options
        self.toolVersion = toolVersion
        self.out = out
        self.checkpointEvery = checkpointEvery
        self.export = export
    }

    /// Prepares the output folder of a training: refused when it is, or holds, one of `inputs`;
    /// one that exists is kept with `resume` (which needs it), replaced with `force`, else
    /// refused; a missing one is created.
    public static func prepareOutput(_ out: String, inputs: [String], force: Bool, resume: Bool) throws {
        let fm = FileManager.default
        let target = URL(fileURLWithPath: out).standardizedFileURL.path
        try Files.checkOutputFolder(out, option: "--out", inputs: inputs, force: force || resume)
        let exists = fm.fileExists(atPath: target)
        if resume {
            guard exists else { throw JobError.nothingToResume(path: out) }
            return
        }
        if exists {
            guard force else { throw JobError.outputExists(path: out) }
            try fm.removeItem(atPath: target)
        }
        try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
    }

    /// Runs (or with `resume`, continues from `out`'s newest checkpoint) to the last step and
    /// returns the run's id. `progress` sees every step and may throw `JobStop` to stop after it
    /// (a checkpoint is written first).
    @discardableResult
    public func run(db: ResultsDatabase, resume: Bool, progress: (StepReport) throws -> Void = { _ in }) throws -> Int64 {
        let corpusHash = trainer.corpus.hash
        try checkSameOnEveryRank()
        let (id, secondsBefore, completed) = resume ? try resumed(db: db, corpusHash: corpusHash)
                                                    : (try begun(db: db, corpusHash: corpusHash), 0, false)
        if completed { return id }
        try startFollowers()
        let started = DispatchTime.now().uptimeNanoseconds
        func seconds() -> Double { secondsBefore + Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9 }
        func checkpoint() throws {
            try TrainingCheckpoint.save(trainer, out: out, runID: id, corpusHash: corpusHash, seconds: seconds(), keepAll: keepAll,
                                        tokenizerFrom: tokenizerDirectory)
        }
        var last: StepReport?
        try RunLifecycle.execute(db: db, runID: id, total: trainer.settings.steps, unit: "steps",
                                 resume: "the same options and --resume", doneCount: { trainer.step }, {
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
            if !keepCheckpoints && !keepAll { try? FileManager.default.removeItem(at: TrainingCheckpoint.directory(out: out)) }
        }, finish: { (try summaries(db: db, runID: id, seconds: seconds()), []) })
        return id
    }

    /// `--resume`: the run that `out`'s newest checkpoint names, checked against the stored run
    /// and this job, claimed and restored into the trainer; `completed` when it has nothing left
    /// to run. `seconds`: the training time before this resume.
    func resumed(db: ResultsDatabase, corpusHash: String) throws -> (runID: Int64, seconds: Double, completed: Bool) {
        guard let folder = TrainingCheckpoint.latest(out: out) else {
            throw TrainingError.checkpointMissing(directory: out.path)
        }
        let state = try TrainingCheckpoint.read(folder)
        guard let id = state.runID else {
            throw TrainingError.checkpointCorrupt(file: folder.path, reason: "it names no stored run")
        }
        let record = try db.run(id: id)
        guard let record, record.command == command else {
            throw JobError.trainingMismatch(directory: out.path, option: "the stored run", stored: "\(id)",
                                            now: "no \(command) run \(id) in \(db.path)")
        }
        // The stored run's source and options first (they name what the user changed), then
        // the checkpoint's own settings and corpus.
        try checkSameTraining(record, folder: folder)
        try check(state, folder: folder, corpusHash: corpusHash)
        if record.status == .completed {
            _ = try trainer.communicator.broadcast(-1)
            return (id, 0, true)
        }
        _ = try db.claimRun(id: id, force: forceResume)
        try state.restore(into: trainer, from: folder)
        return (id, state.seconds, false)
    }

    /// A new run, stored, with its step-0 checkpoint written.
    func begun(db: ResultsDatabase, corpusHash: String) throws -> Int64 {
        let runID = try db.beginRun(RunRecord(
            command: command, optionsJSON: options.json, modelPath: modelPath, modelHash: modelHash,
            lnMode: trainer.model.lnMode.rawValue, processingJSON: "{}", promptSetPath: trainer.corpus.path,
            promptSetHash: corpusHash, nPrompts: trainer.settings.steps, toolVersion: toolVersion, shard: nil))
        // A checkpoint of step 0 at once: a run killed before its first regular checkpoint
        // resumes too (from the start, under the same run id). If it cannot be written (a
        // full disk), the run is marked failed, not left running.
        do {
            try TrainingCheckpoint.save(trainer, out: out, runID: runID, corpusHash: corpusHash, seconds: 0, keepAll: keepAll,
                                        tokenizerFrom: tokenizerDirectory)
        } catch {
            try? db.finishRun(runID: runID, status: .failed, summaries: [], error: Files.describe(error))
            throw error
        }
        return runID
    }

    /// Every rank of a data-parallel run (`mpirun -n K`) checks that all have the same options,
    /// source weights and training data as rank 0, and refuses otherwise (on every rank).
    public func checkSameOnEveryRank() throws {
        let world = trainer.communicator
        guard world.size > 1 else { return }
        func digest(_ s: String) -> UInt64 { Data(s.utf8).withUnsafeBytes { XXH64.hash($0, seed: 0) } }
        try world.checkSame(digest: digest(command + "\n" + options.json), what: "the options")
        try world.checkSame(digest: digest(modelHash), what: "the weights (hash)")
        try world.checkSame(digest: digest(trainer.corpus.hash), what: "the training data (its tokens hash)")
        try world.checkSame(digest: digest(trainer.allreduce.rawValue), what: "the --allreduce mode")
    }

    /// Rank 0, once the run is set up (a resume's checkpoint restored): tells the other ranks the
    /// step it starts from, then every rank checks that all hold the same training state.
    func startFollowers() throws {
        guard trainer.communicator.size > 1 else { return }
        _ = try trainer.communicator.broadcast(Int64(trainer.step))
        try trainer.communicator.checkSame(digest: trainer.stateDigest, what: "the training state (weights, AdamW moments, σ, step)")
    }

    /// A rank other than 0 of a data-parallel run: runs the same steps as rank 0 (its share of
    /// each step's micro-batches) and writes nothing; with `resume` it restores the checkpoint
    /// rank 0 resumes from (--out must be on a file system every rank reads).
    public func follow(resume: Bool) throws {
        try checkSameOnEveryRank()
        let start = try trainer.communicator.broadcast(0)
        if start < 0 { return }
        if resume {
            guard let folder = TrainingCheckpoint.latest(out: out) else { throw TrainingError.checkpointMissing(directory: out.path) }
            try TrainingCheckpoint.read(folder).restore(into: trainer, from: folder)
        }
        try trainer.communicator.checkSame(digest: trainer.stateDigest, what: "the training state (weights, AdamW moments, σ, step)")
        while trainer.step < trainer.settings.steps { try trainer.runStep() }
    }

    /// Refuses a resume whose source weights (`--init` config and seed, `--from` or MODEL: by
    /// content hash) or any option that shapes the result differ from the stored run's, naming
    /// the first such option and both values.
    func checkSameTraining(_ record: RunRecord, folder: URL) throws {
        func mismatch(_ option: String, _ stored: String, _ now: String) -> JobError {
            .trainingMismatch(directory: folder.path, option: option, stored: stored, now: now)
        }
        func describe(_ hash: String, _ path: String) -> String {
            hash.hasPrefix("init:") ? "--init \(path) (config and seed hash \(hash.dropFirst(5).prefix(12)))"
                : "the weights of \(path) (hash \(hash.prefix(12)))"
        }
        let sourceDiffers = record.modelHash != modelHash
        let bothInit = record.modelHash.hasPrefix("init:") && modelHash.hasPrefix("init:")
        // Another model explains every option that follows from it (its schedule): name it first.
        // Two --init sources differ in their hash also when only --seed does: name the option first.
        if sourceDiffers && !bothInit {
            throw mismatch("its source", describe(record.modelHash, record.modelPath), describe(modelHash, modelPath))
        }
        let stored = TrainOptions(json: record.optionsJSON)
        // Another recipe explains every value that follows from it: name it first.
        if stored.computation.recipe != options.computation.recipe {
            throw mismatch("--recipe", stored.computation.recipe ?? "(not set)", options.computation.recipe ?? "(not set)")
        }
        // --keep-ln changes the default of --decay-ln-weights: name it first.
        if stored.computation.keepLN != options.computation.keepLN {
            throw mismatch("--keep-ln", stored.computation.keepLN.map { "\($0)" } ?? "(not set)",
                           options.computation.keepLN.map { "\($0)" } ?? "(not set)")
        }
        if let d = TrainOptions.sameComputation(stored, options) {
            throw mismatch("--" + d.key.replacingOccurrences(of: "_", with: "-"), d.a ?? "(not set)", d.b ?? "(not set)")
        }
        if sourceDiffers {
            throw mismatch("its source", describe(record.modelHash, record.modelPath), describe(modelHash, modelPath))
        }
    }

    func check(_ state: TrainingCheckpoint, folder: URL, corpusHash: String) throws {
        func mismatch(_ option: String, _ stored: String, _ now: String) -> JobError {
            .trainingMismatch(directory: folder.path, option: option, stored: stored, now: now)
        }
        guard state.corpusHash == corpusHash else { throw mismatch("the training data (its tokens hash)", state.corpusHash, corpusHash) }
        let a = state.settings, b = trainer.settings
        if a == b {
            if let ln = trainer.layerNorms, let stored = state.layerNorms {
                guard ln.keepLN == stored.keepLN else { throw mismatch("--keep-ln", "\(stored.keepLN)", "\(ln.keepLN)") }
                guard ln.momentum == stored.momentum else { throw mismatch("--momentum", "\(stored.momentum)", "\(ln.momentum)") }
                guard ln.sigmaUpdate == stored.sigmaUpdate else {
                    throw mismatch("--sigma-update", stored.sigmaUpdate.rawValue, ln.sigmaUpdate.rawValue)
                }
                guard ln.schedule == stored.schedule else {
                    func steps(_ f: FakeLayerNorms) -> String { f.schedule.events.map { "\($0.path.name)@\($0.step)" }.joined(separator: ",") }
                    throw mismatch("the LayerNorm removal schedule", steps(stored), steps(ln))
                }
            } else if (trainer.layerNorms == nil) != (state.layerNorms == nil) {
                throw mismatch("LayerNorm removal", state.layerNorms == nil ? "off" : "on", trainer.layerNorms == nil ? "off" : "on")
            }
            return
        }
        let pairs: [(String, String, String)] = [
            ("--seq-len", "\(a.seqLen)", "\(b.seqLen)"), ("--batch-tokens", "\(a.tokensPerStep)", "\(b.tokensPerStep)"),
            ("--micro-batch", "\(a.microBatch)", "\(b.microBatch)"),
            ("--schedule-steps", "\(a.learningRate.totalSteps)", "\(b.learningRate.totalSteps)"), ("--stop-at", "\(a.steps)", "\(b.steps)"),
            ("--seed", "\(a.seed)", "\(b.seed)"), ("--lr", "\(a.learningRate.peak)", "\(b.learningRate.peak)"),
            ("--min-lr", "\(a.learningRate.floor)", "\(b.learningRate.floor)"),
            ("--warmup", "\(a.learningRate.warmupSteps)", "\(b.learningRate.warmupSteps)"),
            ("--weight-decay", "\(a.adamW.weightDecay)", "\(b.adamW.weightDecay)"),
            ("--max-grad-norm", "\(a.maxGradNorm)", "\(b.maxGradNorm)"), ("--aux-weight", "\(a.auxWeight)", "\(b.auxWeight)"),
            ("--mask-eot-targets", "\(a.maskEOTTargets)", "\(b.maskEOTTargets)"),
            ("--aux-target", a.auxTargetSkipsBOSAndEOT ? "content" : "all", b.auxTargetSkipsBOSAndEOT ? "content" : "all"),
            ("--decay-ln-weights", "\(a.adamW.decayLayerNormWeights)", "\(b.adamW.decayLayerNormWeights)"),
            ("--embd-pdrop", "\(a.dropout.embd)", "\(b.dropout.embd)"), ("--attn-pdrop", "\(a.dropout.attn)", "\(b.dropout.attn)"),
            ("--resid-pdrop", "\(a.dropout.resid)", "\(b.dropout.resid)"),
        ]
        let (option, stored, now) = pairs.first { $0.1 != $0.2 } ?? ("the optimizer settings", "as stored", "different ones")
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
    /// Recorded with the run, its computation set to the job's `context`, `batch` and `chunkSize`.
    public var options: EvalOptions
    public var toolVersion: String
    /// Only this shard of the text's windows (nil: all of them). Recorded with the run.
    public var shard: Shard?

    public init(entries: [Entry], text: TokenCorpus, context: Int, batch: Int, options: EvalOptions = EvalOptions(),
                toolVersion: String) {
        self.entries = entries
        self.text = text
        self.context = context
        self.batch = batch
        self.options = options
        self.toolVersion = toolVersion
    }

    /// Windows per stored chunk: each chunk's rows (every model's loss on those windows) are
    /// written in one transaction, so an interrupted run loses at most one chunk.
    public var chunkSize = 32
    /// `--force-resume`: take a run over whose writer on another host was heard from recently.
    public var forceResume = false

    /// The processes scoring the windows (`mpirun -n K lnlens eval`): each chunk's passes are
    /// split over the ranks, rank 0 alone stores (`run`), the others `follow`. Default: one process.
    public var communicator: Communicator = .single

    /// The windows the run scores (the shard's, under their indices in the whole text), after
    /// checking every model against the text and context.
    func selectedWindows() throws -> [Int] {
        for e in entries { try Evaluation.validate(model: e.model, text: text, context: context) }
        let n = text.blockCount(seqLen: context)
        let windows = shard.map { $0.select(Array(0..<n)) } ?? Array(0..<n)
        if let shard, windows.isEmpty {
            throw ShardError.invalid(source: "--shard", value: shard.description,
                                     reason: "the text has only \(n) window\(n == 1 ? "" : "s") of \(context) tokens: use at most \(n) shards")
        }
        return windows
    }

    /// The options stored with the run: `options` with the job's context, batch and chunk size.
    var recorded: EvalOptions {
        var recorded = options
        (recorded.computation.context, recorded.computation.batch, recorded.computation.chunkSize) = (context, batch, chunkSize)
        return recorded
    }

    /// Throws, before anything is stored, what `run` would for these models, text and shard; over
    /// MPI, every rank then checks that all have rank 0's options, weights and text (as `train`),
    /// refusing on every rank otherwise. Every rank calls it before rank 0 opens the database.
    public func prepare() throws {
        _ = try selectedWindows()
        guard communicator.size > 1 else { return }
        func digest(_ s: String) -> UInt64 { Data(s.utf8).withUnsafeBytes { XXH64.hash($0, seed: 0) } }
        try communicator.checkSame(digest: digest(StoreName.evalCommand + "\n" + recorded.json), what: "the options")
        try communicator.checkSame(digest: digest(entries.map(\.hash).joined(separator: ",")), what: "the weights (hash)")
        try communicator.checkSame(digest: digest(text.hash), what: "the text (its tokens hash)")
    }

    /// Every model's loss rows on `chunk`, its passes split over the ranks; rank 0 first sends the
    /// chunk to the others (who wait in `follow`).
    func score(_ chunk: [Int], progress: (Int, Int) -> Void) throws -> [ResultRow] {
        if communicator.size > 1, communicator.isRoot { _ = try communicator.broadcast(chunk.map(Int64.init)) }
        let losses = try Evaluation.losses(models: entries.map(\.model), text: text, context: context, windows: chunk,
                                           batch: batch, world: communicator, progress: progress)
        return zip(entries, losses).flatMap { e, values in
            zip(chunk, values).map { ResultRow(promptIndex: $0, site: e.name, quantity: StoreName.loss, value: $1) }
        }
    }

    /// A rank other than 0 of `mpirun -n K lnlens eval`: scores its share of each chunk rank 0
    /// sends until rank 0 says the run is over; reads and writes no database.
    public func follow() throws {
        while true {
            let chunk = try communicator.broadcast([Int64]()).map(Int.init)
            if chunk.isEmpty { return }
            _ = try score(chunk) { _, _ in }
        }
    }

    /// Evaluates every model and stores one run (or, with `resume`, continues that stored run
    /// from its stored chunks); returns its id and the results in model order. `progress(model,
    /// done, total)` counts (model, window) scores; if it throws `JobStop` the run stops after the
    /// chunk being stored, marked interrupted, and resumes to the rows of an uninterrupted run.
    /// Over MPI this is rank 0's part: it alone touches the database.
    public func run(db: ResultsDatabase, resume: Int64? = nil,
                    progress: (String, Int, Int) throws -> Void = { _, _, _ in }) throws -> (Int64, [EvalResult]) {
        let windows = try selectedWindows(), n = text.blockCount(seqLen: context)
        let names = entries.map(\.name).joined(separator: " | ")
        if let resume, let stored = try db.run(id: resume), stored.command == StoreName.evalCommand, stored.modelPath != names {
            // Rows are keyed by the model as given: the same models must be named the same way.
            throw JobError.resumeMismatch(runID: resume, reason: "its models are \(stored.modelPath) but this invocation has \(names)")
        }
        let (id, done, completed) = try RunLifecycle.beginOrResume(db: db, run: RunRecord(
            command: StoreName.evalCommand, optionsJSON: recorded.json, modelPath: names,
            modelHash: entries.map(\.hash).joined(separator: ","), lnMode: entries[0].model.lnMode.rawValue, processingJSON: "{}",
            promptSetPath: text.path, promptSetHash: text.hash, nPrompts: n, toolVersion: toolVersion,
            shard: shard.map { ($0.index, $0.count) }), options: EvalOptions.self, resume: resume, forceResume: forceResume)
        if !completed {
            let total = windows.count * entries.count
            var scored = windows.filter(done.contains).count * entries.count
            try RunLifecycle.execute(db: db, runID: id, total: windows.count, unit: "windows", resume: "--resume \(id)",
                                     doneCount: { ((try? db.completedPromptIndices(runID: id)) ?? done).count }, {
                for chunkStart in stride(from: 0, to: windows.count, by: chunkSize) {
                    let chunk = windows[chunkStart..<min(windows.count, chunkStart + chunkSize)].filter { !done.contains($0) }
                    if chunk.isEmpty { continue }
                    // Rank 0's windows stand for every rank's in the count (the ranks' shares are alike).
                    let share = Evaluation.share(of: chunk.count, batch: batch, rank: 0, ranks: communicator.size).count
                    let rows = try score(chunk) { m, d in
                        try? progress(entries[m].name, scored + m * chunk.count + min(chunk.count, d * chunk.count / max(1, share)), total)
                    }
                    scored += chunk.count * entries.count
                    try db.writeBatch(runID: id, prompts: [], values: rows, ranges: contiguousRanges(chunk))
                    try progress(entries.last!.name, scored, total)
                }
            }, finish: { (Self.summaries(from: try db.results(runID: id), lnModes: lnModes), []) })
        }
        if communicator.size > 1 { _ = try communicator.broadcast([Int64]()) }  // the followers' end
        // The results from what is stored: a resumed run's earlier chunks included.
        let byModel = Dictionary(grouping: try db.results(runID: id).filter { $0.quantity == StoreName.loss }, by: \.site)
        let results = entries.map { e in
            EvalResult(windowLosses: (byModel[e.name] ?? []).sorted { $0.promptIndex < $1.promptIndex }
                .map { WindowLoss(window: $0.promptIndex, loss: $0.value) }, context: context)
        }
        return (id, results)
    }

    /// Each model's LN mode (`runs.ln_mode` values) by its name as given.
    var lnModes: [String: String] {
        Dictionary(entries.map { ($0.name, $0.model.lnMode.rawValue) }, uniquingKeysWith: { a, _ in a })
    }

    /// The summaries of an eval run with these result rows (in any order): per model (`site`),
    /// `Evaluation.summary` of its windows' losses in window order, and the model's LN mode
    /// (`ln_free` 1 or 0) when `lnModes` names it. What a run stores when it finishes, and what
    /// `MergeJob` stores for shards merged into one run.
    public static func summaries(from stored: [ResultRow], lnModes: [String: String] = [:]) -> [SummaryRow] {
        let byModel = Dictionary(grouping: stored.filter { $0.quantity == StoreName.loss }, by: \.site)
        return byModel.keys.sorted().flatMap { model -> [SummaryRow] in
            let losses = byModel[model]!.sorted { $0.promptIndex < $1.promptIndex }.map(\.value)
            let s = Evaluation.summary(losses: losses)
            return [SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.loss, value: s.loss),
                    SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.ciLow, value: s.ciLow),
                    SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.ciHigh, value: s.ciHigh),
                    SummaryRow(scope: StoreName.scopeEval, key: model, metric: "windows", value: Double(losses.count))]
                + (lnModes[model].map { [SummaryRow(scope: StoreName.scopeEval, key: model, metric: StoreName.lnFree,
                                                    value: $0 == "ln-free" ? 1 : 0)] } ?? [])
        }
    }

    /// The LN modes an eval run's summaries record (`ln_free`), by model.
    public static func lnModes(from summaries: [SummaryRow]) -> [String: String] {
        var out: [String: String] = [:]
        for s in summaries where s.scope == StoreName.scopeEval && s.metric == StoreName.lnFree {
            out[s.key] = s.value == 1 ? "ln-free" : "layernorm"
        }
        return out
    }
}

extension TrainOptions {
    /// Records a `remove-ln` of `model` with the (resolved) recipe `r`: its name and every value
    /// of the removal beside the batch and learning rates already set, with the σ update and the
    /// companion's numerics of `settings` and `layerNorms`.
    public mutating func recordRemoval(_ r: RemovalRecipe, model: String, keepLN: Bool, settings: TrainingSettings,
                                       layerNorms: FakeLayerNorms) {
        (record.model, computation.recipe, computation.keepLN) = (model, r.name.rawValue, keepLN)
        (computation.auxWeight, computation.momentum, computation.momentumSequences) = (r.auxWeight, r.momentum, r.momentumSequences)
        computation.sigmaUpdate = layerNorms.sigmaUpdate.rawValue
        (computation.maskEOTTargets, computation.decayLNWeights) = (settings.maskEOTTargets, settings.adamW.decayLayerNormWeights)
        computation.auxTarget = settings.auxTargetSkipsBOSAndEOT ? "content" : "all"
        computation.schedule = r.schedule.events.map { "\($0.path.name)@\($0.step)" }.joined(separator: ",")
    }
}
