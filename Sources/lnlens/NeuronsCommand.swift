import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import TensorCore
import Training

private typealias N = StoreName.Neurons

struct NeuronsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "neurons",
        abstract: "Entropy neurons of the last MLP: W_U's null space, mean-ablation effects on loss and entropy, cumulative ablation, per model, stored.",
        discussion: """
            The paper's mech_interp/entropy_neurons/ scripts. Every last-layer neuron is ranked by \
            ‖w_out‖ / LogitVar(w_out) (svd_comparison.py) and its w_out measured against W_U's \
            singular directions (null-space fraction: Σ cos² over the last --null-dims). The top \
            --top neurons of the first model (or --select-from's, or --neurons) are mean-ablated — \
            their hook_post set to its mean over every scored position of the --windows windows — \
            in every model: each alone (ablate_all_models.py: per-token |Δloss|, |Δentropy|), and \
            the first k together for k = 0 … --top (cumulative_ablation.py). Only the last block's \
            MLP, the final LayerNorm and the unembedding are rerun per ablation. One run per model; \
            --shard I/N splits the ablations (every shard makes the one pass the mean needs). \
            docs/analyses.md has the definitions.
            """)

    @Argument(help: "Models (folders or names); default: the embedded gpt2-tiny, gpt2-tiny-vanilla and gpt2-tiny-lnfree.")
    var models: [String] = []
    @Option(help: "Text to read, cut into windows of --context tokens as `eval` cuts it: a .txt file, or the name of one in corpus/ (default: heldout); or give --tokens or --dataset.")
    var text: String?
    @OptionGroup var data: TokenDataFlags
    @Option(help: "Tokens per window (default: min(128, the model's n_positions)).") var context: Int?
    @Option(help: "Windows read: the first N of the input (default 100; fewer when the input has fewer).") var windows = 100
    @Option(help: "Neurons ablated: the top N of the ranking (the companion's scripts: 3).") var top = 3
    @Option(help: ArgumentHelp("Ablate these last-layer neurons instead, in this order (e.g. the companion's 584,2123,2870).", valueName: "n,n,…"))
    var neurons: String?
    @Option(help: "The model whose ranking picks the neurons (default: the first model), as the companion ablates the original model's neurons in all three.")
    var selectFrom: String?
    @Option(help: "Bottom singular directions of W_U whose share of ‖w_out‖² is the null-space fraction (default: min(50, d_model / 8)).")
    var nullDims: Int?
    @Option(help: "Windows per forward pass.") var batch = 8
    @Option(help: "SQLite database to store the runs in.") var db = "results/lnlens.sqlite"
    @Option(help: "Continue this interrupted run (give the one model it used, the same input and options).") var resume: Int64?
    @Flag(help: "With --resume: take the run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @OptionGroup var sharding: ShardOption
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON: every run's summaries.") var json = false

    func validate() throws {
        _ = try source
        if let context, context < 2 { throw ValidationError("--context must be at least 2") }
        if windows < 1 { throw ValidationError("--windows must be at least 1") }
        if top < 1 { throw ValidationError("--top must be at least 1") }
        if neurons != nil && selectFrom != nil { throw ValidationError("give one of --neurons and --select-from") }
        if let list = try givenNeurons, Set(list).count != list.count { throw ValidationError("--neurons \(neurons!): give each neuron once") }
        if let nullDims, nullDims < 1 { throw ValidationError("--null-dims must be at least 1") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if let resume, resume < 1 { throw ValidationError("--resume \(resume): give a run id (1, 2, …; see lnlens runs)") }
        if resume != nil && models.count != 1 { throw ValidationError("--resume continues one run: give the one model it used") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        var seen = Set<String>()
        for model in models where !seen.insert(model).inserted {
            throw ValidationError("the model \(model) is given twice: give each model once")
        }
    }

    /// The data: --text (default heldout; a shipped name resolved), --tokens or --dataset.
    var source: CorpusSource {
        get throws { try data.source(textOrHeldout: text) }
    }

    /// `--neurons` as a list; nil when not given.
    var givenNeurons: [Int]? {
        get throws {
            guard let neurons else { return nil }
            let parts = neurons.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            let list = parts.compactMap { Int($0) }
            guard list.count == parts.count, !list.isEmpty, list.allSatisfy({ $0 >= 0 }) else {
                throw ValidationError("--neurons \(neurons): give neuron indices ≥ 0 separated by commas, e.g. 584,2123,2870")
            }
            return list
        }
    }

    var specs: [String] {
        if !models.isEmpty { return models }
        let names = [EmbeddedModels.defaultName, "gpt2-tiny-vanilla", EmbeddedModels.lnFreeName]
        return names.filter { FileManager.default.fileExists(atPath: EmbeddedModels.resolve($0) + "/config.json") }
    }

    func run() throws {
        let shard = try sharding.resolved()
        let (list, from, ranked) = try selection()
        var selecting = ranked
        let store = LazyDatabase(path: db)
        var ids: [Int64] = []
        for spec in specs {
            // The model that ranked the neurons is loaded once when it is also the first one run.
            let reused = selecting.flatMap { $0.spec == spec ? $0 : nil }
            let loaded = try reused?.model ?? LoadedModel.load(spec, processing: processing.options)
            selecting = nil
            if let bad = list.first(where: { $0 >= loaded.model.config.dMLP }) {
                throw AnalysisError.neuronOutOfRange(neuron: bad, dMLP: loaded.model.config.dMLP)
            }
            let window = context ?? min(128, loaded.model.config.nCtx)
            let tok = try loaded.requireTokenizer()
            let corpus = try source.load(tokenizer: tok, vocabSize: loaded.model.config.dVocab, window: window)
            try Evaluation.validate(model: loaded.model, text: corpus, context: window)
            let input = AnalysisInput.windows(corpus, context: window)
            var job = NeuronJob(model: loaded.model, modelPath: loaded.checkpoint.directory.path, modelHash: try loaded.weightsHash(),
                                input: input, options: recorded(window: window, neurons: list, from: from, shard: shard),
                                toolVersion: LNLensVersion.string)
            (job.shard, job.forceResume, job.weights) = (shard, forceResume, reused?.weights)
            try MemoryBudget.check(bytes: 2 * ForwardPass.footprint(B: batch, T: window, config: loaded.model.config, backward: false)
                                   + job.windows * window * loaded.model.config.dModel * MemoryLayout<Float>.stride)
            ids.append(try ProgressLine.run(label: "neurons \(spec)", unit: "ablations") { progress, _ in
                try job.run(db: try store.open(), resume: resume, progress: progress)
            })
        }
        let runs = try store.readBack(ids, label: "neurons") { db, id in try StoredAnalysis(db: db, runID: id) }
        if json { return try printJSON(["runs": runs]) }
        Self.printTables(runs, neurons: list)
        printStored(ids, db: db, shard: shard)
    }

    /// The neurons ablated and where they come from: --neurons, or the top of a model's ranking;
    /// with the ranking model and its weights' measures, kept when the first model run is that one.
    func selection() throws -> ([Int], String, (spec: String, model: LoadedModel, weights: EntropyNeurons.Weights)?) {
        if let list = try givenNeurons { return (list, "given", nil) }
        guard let spec = selectFrom ?? specs.first else { throw ValidationError("give the models to read (none is embedded here)") }
        let loaded = try LoadedModel.load(spec, processing: processing.options)
        let dims = nullDims ?? EntropyNeurons.defaultNullDims(dModel: loaded.model.config.dModel)
        let weights = try EntropyNeurons.weights(model: loaded.model, nullDims: dims), ranking = weights.ranking
        guard top <= ranking.count else { throw ValidationError("--top \(top): \(spec)'s last MLP has \(ranking.count) neurons") }
        return (Array(ranking.prefix(top)), spec, spec == specs.first ? (spec, loaded, weights) : nil)
    }

    /// The options recorded with each run.
    func recorded(window: Int, neurons list: [Int], from: String, shard: Shard?) -> NeuronOptions {
        var o = NeuronOptions()
        (o.record.models, o.record.db, o.record.processing, o.record.shard) = (specs.joined(separator: ","), db, processing.stored, shard?.description)
        (o.record.tokens, o.record.dataset) = (data.tokens, data.dataset)
        o.record.text = data.tokens == nil && data.dataset == nil ? text ?? "heldout" : nil
        (o.computation.context, o.computation.windows, o.computation.batch) = (window, windows, batch)
        (o.computation.tokenDtype, o.computation.field) = (data.tokenDtype, data.dataset == nil ? nil : data.fieldName)
        (o.computation.neurons, o.computation.selectedFrom, o.computation.nullDims) = (list.map(String.init).joined(separator: ","), from, nullDims)
        return o
    }

    /// Per ablated neuron: its null-space fraction and ratio rank in each model, and the mean Δloss
    /// and Δentropy of its ablation; then the cumulative ablation's change.
    static func printTables(_ runs: [StoredAnalysis], neurons: [Int]) {
        let rows = neurons.map { "N\($0)" }
        print("entropy neurons: null-space fraction [ratio rank] / mean Δloss / mean Δentropy when mean-ablated alone:")
        printModelTable(title: "neuron", rows: rows, runs: runs) { r, key in
            let v = { (m: String) in r.value(N.scopeNeurons, key, m) }
            return "\(fixed(v(N.nullFraction), 3)) [\(fixed(v("ratio_rank"), 0))] / \(signed(v("delta_loss"))) / \(signed(v("delta_entropy")))"
        }
        let ks = (0...neurons.count).map { "k\($0)" }
        print("cumulative ablation of the first k: loss / entropy (change from k = 0):")
        printModelTable(title: "k", rows: ks, runs: runs) { r, key in
            let v = { (m: String) in r.value(N.scopeCumulative, key, m) }
            return "\(fixed(v(N.loss), 4)) / \(fixed(v(N.entropy), 4)) (\(percent(v("loss_change_pct"))), \(percent(v("entropy_change_pct"))))"
        }
    }

    static func signed(_ v: Double?) -> String { v.map { String(format: "%+.5f", $0) } ?? "-" }
    static func percent(_ v: Double?) -> String { v.map { String(format: "%+.2f%%", $0) } ?? "-" }
}
