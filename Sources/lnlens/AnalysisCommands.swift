import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import TensorCore
import Training

/// What `sinks`, `norms`, `lens` and `compare` share: the models, the input (a text, a token file
/// or a JSON Lines dataset cut into windows as `eval` cuts them, or a prompt set as `dla` reads
/// it), batching, storing, sharding, resuming.
struct AnalysisRunOptions: ParsableArguments {
    @Argument(help: "Models (folders or names); default: the embedded gpt2-tiny, gpt2-tiny-vanilla and gpt2-tiny-lnfree.")
    var models: [String] = []
    @Option(help: "Text to read, cut into windows of --context tokens as `eval` cuts it: a .txt file, or the name of one in corpus/ (default: heldout, unless --prompts, --tokens or --dataset).")
    var text: String?
    @OptionGroup var data: TokenDataFlags
    @Option(help: "Tokens per window of a text, token file or dataset (default: min(128, the model's n_positions)).") var context: Int?
    @Option(help: "Read only the first N windows of the text, token file or dataset (default: all).") var windows: Int?
    @Option(help: "Prompt set instead of a text (JSONL: prompt, answer; a file or a shipped set's name).") var prompts: String?
    @Flag(inversion: .prefixedNo, help: "With --prompts: put <|endoftext|> first in every prompt (default), as `dla` and TransformerLens do.")
    var prependBos = true
    @Flag(help: "With --prompts: skip and count invalid lines instead of stopping at the first.") var skipInvalid = false
    @Option(help: "Sequences per forward pass (lowered to fit memory).") var batch = 8
    @Option(help: "Sequences stored per transaction (an interrupted run loses at most one chunk).") var chunkSize = 32
    @Option(help: "SQLite database to store the runs in.") var db = "results/lnlens.sqlite"
    @Option(help: "Continue this interrupted run (give the model it used — compare: the models —, the same input and options).") var resume: Int64?
    @Flag(help: "With --resume: take the run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @OptionGroup var sharding: ShardOption
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON: every run's summaries.") var json = false

    func validate() throws {
        let given = [text.map { _ in "--text" }, prompts.map { _ in "--prompts" }, data.tokens.map { _ in "--tokens" },
                     data.dataset.map { _ in "--dataset" }].compactMap { $0 }
        if given.count > 1 { throw ValidationError("give one of \(given.joined(separator: ", ")), not several") }
        if prompts != nil && context != nil { throw ValidationError("--context goes with a text, --tokens or --dataset (prompts are read whole)") }
        if let windows, windows < 1 { throw ValidationError("--windows \(windows): give how many windows to read, at least 1") }
        if windows != nil && prompts != nil { throw ValidationError("--windows goes with a text, --tokens or --dataset (prompts are read whole)") }
        if prompts == nil && (skipInvalid || !prependBos) { throw ValidationError("--skip-invalid and --no-prepend-bos go with --prompts") }
        if let context, context < 2 { throw ValidationError("--context must be at least 2") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
        if let resume, resume < 1 { throw ValidationError("--resume \(resume): give a run id (1, 2, …; see lnlens runs)") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        var seen = Set<String>()
        for model in models where !seen.insert(model).inserted {
            throw ValidationError("the model \(model) is given twice: give each model once")
        }
    }

    var specs: [String] {
        if !models.isEmpty { return models }
        let names = [EmbeddedModels.defaultName, "gpt2-tiny-vanilla", EmbeddedModels.lnFreeName]
        return names.filter { FileManager.default.fileExists(atPath: EmbeddedModels.resolve($0) + "/config.json") }
    }

    /// The input as `model` reads it (its tokenizer, its context): the prompt set, or the text,
    /// token file or dataset cut into windows of --context, the first --windows of them.
    func input(for loaded: LoadedModel) throws -> AnalysisInput {
        if let prompts {
            return .prompts(try loadPromptSet(prompts, model: loaded, skipInvalid: skipInvalid, prependBOS: prependBos))
        }
        let window = context ?? min(128, loaded.model.config.nCtx)
        let source = try data.source(textOrHeldout: text)
        let corpus = try source.load(tokenizer: try loaded.requireTokenizer(), vocabSize: loaded.model.config.dVocab, window: window)
        if !json, let line = TokenDataFlags.describe(corpus) { print(line) }
        try Evaluation.validate(model: loaded.model, text: corpus, context: window)
        return limited(.windows(corpus, context: window))
    }

    /// The first --windows windows of `input`.
    func limited(_ input: AnalysisInput) -> AnalysisInput {
        guard let windows, case let .windows(corpus, context) = input, corpus.blockCount(seqLen: context) > windows else { return input }
        let tokens = (0..<windows).flatMap { corpus.block($0, seqLen: context).map(Int32.init) }
        return .windows(TokenCorpus(path: corpus.path, tokens: tokens, documents: corpus.documents), context: context)
    }

    /// The options recorded with each run.
    func recorded(_ input: AnalysisInput, shard: Shard?, configure: (inout AnalysisOptions.Computation) -> Void) -> AnalysisOptions {
        var o = AnalysisOptions()
        (o.record.models, o.record.db, o.record.processing) = (specs.joined(separator: ","), db, processing.stored)
        let file = data.tokens ?? data.dataset
        (o.record.text, o.record.prompts, o.record.shard) = (prompts == nil ? (file ?? text ?? "heldout") : nil, prompts, shard?.description)
        (o.computation.batch, o.computation.chunkSize) = (batch, chunkSize)
        switch input {
        case let .windows(_, context): o.computation.context = context
        case .prompts: (o.computation.prependBOS, o.computation.skipInvalid) = (prependBos, skipInvalid)
        }
        configure(&o.computation)
        return o
    }

    /// Runs `A` on every model, one run each; returns the runs read back, in model order.
    func run<A: SequenceAnalysis>(_: A.Type, label: String, configure: (inout AnalysisOptions.Computation) -> Void = { _ in })
        throws -> [StoredAnalysis] {
        if resume != nil && models.count != 1 { throw ValidationError("--resume continues one run: give the one model it used") }
        let shard = try sharding.resolved()
        let store = LazyDatabase(path: db)
        var ids: [Int64] = []
        for spec in specs {
            let loaded = try LoadedModel.load(spec, processing: processing.options)
            let input = try input(for: loaded)
            let options = recorded(input, shard: shard, configure: configure)
            var job = AnalysisJob(analysis: A(options: options), model: loaded.model, modelPath: loaded.checkpoint.directory.path,
                                  modelHash: try loaded.weightsHash(), input: input, options: options, toolVersion: LNLensVersion.string)
            (job.shard, job.forceResume) = (shard, forceResume)
            let T = input.count > 0 ? input.unit(0).tokens.count : 1
            try MemoryBudget.check(bytes: ForwardPass.footprint(B: job.effectiveBatch(T: T), T: T, config: loaded.model.config,
                                                                logits: .none, backward: false)
                                   + job.effectiveBatch(T: T) * job.analysis.cacheBytes(T: T, config: loaded.model.config))
            ids.append(try ProgressLine.run(label: "\(label) \(spec)", unit: input.unitName) { progress, _ in
                try job.run(db: try store.open(), resume: resume, progress: progress)
            })
        }
        let stored = try store.readBack(ids, label: label) { db, id in try StoredAnalysis(db: db, runID: id) }
        return stored
    }

    /// The last line: where the runs are, how to draw them (or merge them).
    func printStoredLine(_ runs: [StoredAnalysis]) throws {
        let ids = runs.map { "\($0.runID)" }.joined(separator: " ")
        if let shard = try sharding.resolved() {
            print("stored in \(db) as shard \(shard) (runs \(ids)); once all \(shard.count) shards are done, combine them with: lnlens merge OUT.sqlite SHARD.sqlite…")
        } else {
            print("stored in \(db) as run\(runs.count > 1 ? "s" : "") \(ids); draw them with: lnlens report \(ids) --db \(db) --out report.html")
        }
    }
}

/// A stored `sinks`, `norms` or `lens` run read back: its model and summaries.
struct StoredAnalysis: Encodable {
    let runID: Int64, model: String, modelName: String, lnMode: String, input: String, units: Int
    let summaries: [Summary]

    struct Summary: Encodable {
        let scope: String, key: String, metric: String, value: Double
    }

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", model, modelName = "model_name", lnMode = "ln_mode", input, units, summaries
    }

    init(db: ResultsDatabase, runID: Int64) throws {
        guard let run = try db.run(id: runID) else { throw ResultsStoreError.noSuchRun(id: runID, path: db.path) }
        self.runID = runID
        (model, modelName, lnMode, input, units) = (run.modelPath, ModelPath.shortName(run.modelPath), run.lnMode, run.promptSetPath, run.nPrompts)
        summaries = try db.summaries(runID: runID).map { Summary(scope: $0.scope, key: $0.key, metric: $0.metric, value: $0.value) }
    }

    /// The value of one summary, or nil.
    func value(_ scope: String, _ key: String, _ metric: String) -> Double? {
        summaries.first { $0.scope == scope && $0.key == key && $0.metric == metric }?.value
    }

    /// The keys of `scope`, in reading order.
    func keys(_ scope: String) -> [String] {
        var seen = Set<String>()
        return SummaryKeyOrder.sorted(summaries.filter { $0.scope == scope }.map(\.key).filter { seen.insert($0).inserted })
    }
}

/// Prints a table: a first column of row labels, then one column per model.
func printModelTable(title: String, rows: [String], runs: [StoredAnalysis], cell: (StoredAnalysis, String) -> String) {
    printColumns(title: title, rows: rows, columns: runs.map { ($0.modelName, $0.lnMode) }) { cell(runs[$0], $1) }
}

/// Prints a table: a first column of row labels, then one column per (name, LN mode) — a model —
/// whose cells `cell(column, row)` gives.
func printColumns(title: String, rows: [String], columns: [(name: String, lnMode: String)], cell: (Int, String) -> String) {
    let first = max(title.count, rows.map(\.count).max() ?? 0)
    let widths = columns.indices.map { c in max(columns[c].name.count, columns[c].lnMode.count, rows.map { cell(c, $0).count }.max() ?? 0) }
    func pad(_ s: String, _ w: Int, right: Bool = false) -> String {
        let gap = String(repeating: " ", count: max(0, w - s.count))
        return right ? gap + s : s + gap
    }
    print(pad(title, first) + zip(columns, widths).map { "  " + pad($0.name, $1, right: true) }.joined())
    print(pad("", first) + zip(columns, widths).map { "  " + pad($0.lnMode, $1, right: true) }.joined())
    for row in rows { print(pad(row, first) + columns.indices.map { "  " + pad(cell($0, row), widths[$0], right: true) }.joined()) }
}

func fixed(_ v: Double?, _ decimals: Int) -> String { v.map { String(format: "%.\(decimals)f", $0) } ?? "-" }

struct SinksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sinks",
        abstract: "Attention-sink rate per layer and head (attention to position 0 above --eps), per model, stored.",
        discussion: """
            A head is a sink at query position q when pattern[q, 0] > --eps; its rate on a window (or \
            prompt) is the fraction of query positions where it is. Stored per unit, layer and head; \
            summarised over units as the paper's sink_rate.py: mean, 95% percentile interval, median, \
            quartiles, of all heads, each layer and each head. docs/analyses.md has the definitions.
            """)

    @OptionGroup var options: AnalysisRunOptions
    @Option(help: "Attention to position 0 above which a head counts as a sink.") var eps = SinkRate.defaultEps

    func validate() throws {
        if !(eps >= 0 && eps < 1) { throw ValidationError("--eps \(eps): give a probability in [0, 1), e.g. 0.3") }
    }

    func run() throws {
        let runs = try options.run(SinkAnalysis.self, label: "sinks") { $0.eps = eps }
        if options.json { return try printJSON(["runs": runs]) }
        var seen = Set<String>()
        let layers = runs.flatMap { $0.keys(StoreName.sinkRate) }.filter { !$0.contains("H") && $0 != "all" && seen.insert($0).inserted }
        let rows = ["all heads"] + SummaryKeyOrder.sorted(layers)
        print("attention-sink rate (attention to position 0 > \(eps)), mean over \(runs.first.map { "\($0.units)" } ?? "0") units [95% interval]:")
        printModelTable(title: "", rows: rows, runs: runs) { r, row in
            let key = row == "all heads" ? "all" : row
            guard let m = r.value(StoreName.sinkRate, key, "mean") else { return "-" }
            return fixed(m, 3) + (row == "all heads" ? " [\(fixed(r.value(StoreName.sinkRate, key, "ci_low"), 3)), \(fixed(r.value(StoreName.sinkRate, key, "ci_high"), 3))]" : "")
        }
        try options.printStoredLine(runs)
    }
}

struct NormsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "norms",
        abstract: "Residual-stream L2 norms per hook, position 0 apart from the rest, with norm growth and cosine between hooks, per model, stored.",
        discussion: """
            The hooks of the paper's residual_norms.py: hook_embed, hook_pos_embed, each block's \
            hook_resid_mid and hook_resid_post, and ln_final.hook_normalized (an LN-free model's last \
            resid_post in its place, as the paper does). For each unit: the value at position 0, and \
            the mean and mean square over the other positions; summarised as mean and standard \
            deviation. docs/analyses.md has the definitions.
            """)

    @OptionGroup var options: AnalysisRunOptions

    func run() throws {
        let runs = try options.run(NormAnalysis.self, label: "norms")
        if options.json { return try printJSON(["runs": runs]) }
        let hooks = runs.first?.keys(StoreName.norm) ?? []
        print("residual-stream L2 norm, mean at position 0 / mean at the other positions:")
        printModelTable(title: "hook", rows: hooks, runs: runs) { r, hook in
            "\(fixed(r.value(StoreName.norm, hook, "first_mean"), 2)) / \(fixed(r.value(StoreName.norm, hook, "rest_mean"), 2))"
        }
        try options.printStoredLine(runs)
    }
}

struct LensCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lens",
        abstract: "Logit lens: each layer's residual through the final LayerNorm scale and the unembedding, per model, stored.",
        discussion: """
            TransformerLens's accumulated_resid(apply_ln=True) @ W_U + b_U: each resid_pre (and with \
            --incl-mid each resid_mid), then the final resid_post, centred and divided by the final \
            residual's ln_final.hook_scale (exactly linear for an LN-free model). Scored against a \
            prompt's answer at its last position, or a window's every next token: probability, rank \
            (1 = top), top-1 and KL(final ‖ layer). docs/analyses.md has the definitions.
            """)

    @OptionGroup var options: AnalysisRunOptions
    @Flag(help: "Also read each layer's resid_mid (TransformerLens's incl_mid=True).") var inclMid = false
    @Option(help: ArgumentHelp("Windows of a text, token file or dataset: score every position's next token (all, the default: L + 1 unembeddings of every position) or only each window's last (last: one row per residual, as a prompt).",
                               valueName: "all|last"))
    var positions: String?

    func validate() throws {
        if let positions, !["all", "last"].contains(positions) { throw ValidationError("--positions \(positions): use all or last") }
        if positions != nil && options.prompts != nil { throw ValidationError("--positions goes with a text, --tokens or --dataset (a prompt scores its answer at its last position)") }
    }

    func run() throws {
        let runs = try options.run(LensAnalysis.self, label: "lens") { ($0.inclMid, $0.positions) = (inclMid, positions == "last" ? "last" : nil) }
        if options.json { return try printJSON(["runs": runs]) }
        let labels = runs.first?.keys(StoreName.scopeLens) ?? []
        let target = options.prompts != nil ? "the answer" : positions == "last" ? "each window's last next token" : "the next token"
        print("logit lens: probability of \(target) / mean rank (1 = top) / KL(final ‖ layer), means over units:")
        printModelTable(title: "residual", rows: labels, runs: runs) { r, label in
            "\(fixed(r.value(StoreName.scopeLens, label, StoreName.prob), 4)) / \(fixed(r.value(StoreName.scopeLens, label, StoreName.rank), 0))"
                + " / \(fixed(r.value(StoreName.scopeLens, label, StoreName.kl), 3))"
        }
        try options.printStoredLine(runs)
    }
}
