import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import TensorCore
import Training

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Per-token CE, entropy, and JSD and KL against the original, of an original model and its fine-tunes, stored.",
        discussion: """
            The first model is the original; each other model (e.g. its vanilla fine-tune and its \
            LN-free twin) is compared with it on the same windows: at every position, each model's \
            cross-entropy of the next token and the entropy of its next-token distribution, and the \
            Jensen-Shannon divergence and KL(original ‖ model) between the two distributions, as the \
            paper's mech_interp/run_inference.py and inference_analysis/analyse_models.py compute \
            them. Stored per token (one run for all the models); summarised per model and token kind \
            (first position, <|endoftext|>, other) as mean and the paper's 95% bootstrap interval. \
            docs/analyses.md has the definitions. Example:
              lnlens compare gpt2 ORIGINAL-FT LN-FREE --text heldout --context 128 --windows 100
            """)

    @OptionGroup var options: AnalysisRunOptions

    func validate() throws {
        if options.specs.count < 2 {
            throw ValidationError("compare needs the original model and at least one other: lnlens compare ORIGINAL OTHER…")
        }
    }

    /// The models, the original first, refused unless they share one vocabulary.
    func loadModels() throws -> [LoadedModel] {
        let loaded = try options.specs.map { try LoadedModel.load($0, processing: options.processing.options) }
        for (spec, other) in zip(options.specs, loaded).dropFirst() where other.model.config.dVocab != loaded[0].model.config.dVocab {
            throw TrainingError.vocabularyMismatch(model: options.specs[0], dVocab: loaded[0].model.config.dVocab, other: spec,
                                                   otherVocab: other.model.config.dVocab)
        }
        return loaded
    }

    func run() throws {
        let shard = try options.sharding.resolved()
        let loaded = try loadModels()
        let input = try options.input(for: loaded[0])
        let recorded = options.recorded(input, shard: shard) { _ in }
        var analysis = CompareAnalysis(options: recorded)
        analysis.others = loaded.dropFirst().map(\.model)
        analysis.eot = loaded[0].tokenizer?.endOfTextID ?? analysis.eot
        var job = AnalysisJob(analysis: analysis, model: loaded[0].model,
                              modelPath: loaded.map(\.checkpoint.directory.path).joined(separator: " | "),
                              modelHash: try loaded.map { try $0.weightsHash() }.joined(separator: ","), input: input,
                              options: recorded, toolVersion: LNLensVersion.string)
        (job.shard, job.forceResume) = (shard, options.forceResume)
        let T = input.count > 0 ? input.unit(0).tokens.count : 1, B = job.effectiveBatch(T: T)
        try MemoryBudget.check(bytes: ForwardPass.footprint(B: B, T: T, config: loaded[0].model.config, logits: .none, backward: false)
                               + B * analysis.cacheBytes(T: T, config: loaded[0].model.config))
        let store = LazyDatabase(path: options.db)
        let id = try ProgressLine.run(label: "compare", unit: input.unitName) { progress, _ in
            try job.run(db: try store.open(), resume: options.resume, progress: progress)
        }
        let runs = try store.readBack([id], label: "compare") { db, id in try StoredAnalysis(db: db, runID: id) }
        if options.json { return try printJSON(["runs": runs]) }
        printTable(runs[0], columns: zip(options.specs, loaded).map { (ModelPath.shortName($0), $1.model.lnMode.rawValue) })
        try options.printStoredLine(runs)
    }

    /// Means and intervals per quantity and token kind, one column per model.
    func printTable(_ run: StoredAnalysis, columns: [(name: String, lnMode: String)]) {
        let labels = [StoreName.ce: "CE", StoreName.entropy: "entropy", StoreName.jsd: "JSD vs original", StoreName.kl: "KL(original ‖ model)"]
        let kinds = [("", "all positions"), ("/first", "first position"), ("/eot", "<|endoftext|>"), ("/other", "other")]
        var rows: [String] = [], keys: [String: (String, String)] = [:]
        for q in CompareAnalysis.quantities {
            for (suffix, name) in kinds where columns.indices.contains(where: { run.value(q, CompareAnalysis.site($0) + suffix, "n") != nil }) {
                let row = "\(labels[q]!), \(name)"
                rows.append(row)
                keys[row] = (q, suffix)
            }
        }
        for (suffix, name) in kinds where run.value(StoreName.ece, CompareAnalysis.site(0) + suffix, "n") != nil {
            rows.append("ECE (10 bins), \(name)")
            keys["ECE (10 bins), \(name)"] = (StoreName.ece, suffix)
        }
        let n = run.value(StoreName.ce, CompareAnalysis.site(0), "n").map { Int($0) } ?? 0
        print("next-token distributions at \(n) positions of \(run.units) \(run.units == 1 ? "unit" : "units"): mean (ECE: value) [95% bootstrap interval]")
        printColumns(title: "", rows: rows, columns: columns) { c, row in
            let (q, suffix) = keys[row]!, key = CompareAnalysis.site(c) + suffix
            guard let mean = run.value(q, key, q == StoreName.ece ? "value" : "mean") else { return "-" }
            return "\(fixed(mean, 4)) [\(fixed(run.value(q, key, "ci_low"), 4)), \(fixed(run.value(q, key, "ci_high"), 4))]"
        }
    }
}
