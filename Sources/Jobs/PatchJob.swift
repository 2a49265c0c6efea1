import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

/// Activation patching and its estimators over a prompt set, every number stored as it goes
/// (one transaction per chunk of prompts; resumable to exactly the rows of an uninterrupted run),
/// and the estimators' errors against activation patching stored when the run completes.
public struct PatchJob {
    public var model: GPT2Model
    public var modelPath: String
    public var modelHash: String
    public var prompts: PromptSet
    public var sites: [PatchSite]
    public var methods: [PatchMethod]
    public var direction: PatchDirection
    /// The variants of the model the methods run on, each stored under its own quantities
    /// (`StoreName.frozen`): `[[]]` the model itself; `--freeze P` one linearised variant;
    /// `--decompose` `Freeze.decomposition`.
    public var variants: [Freeze] = [[]]
    /// `--atp-star-bound`: AtP*'s bound on missed effects, computed when the run completes.
    public var bound: AtPStarBoundSettings?
    /// Token strings of ids, stored with each prompt (map column labels).
    public var tokenText: @Sendable (Int) -> String
    /// Recorded with the run; its batch and chunk sizes and `--min-gap` are what the job does.
    public var options: PatchOptions
    public var toolVersion: String
    /// Prompt pairs per forward pass (`options`' `batch_size`).
    public var batchSize: Int {
        get { options.computation.batchSize ?? 16 }
        set { options.computation.batchSize = newValue }
    }
    /// Prompts stored per transaction (`options`' `chunk_size`).
    public var chunkSize: Int {
        get { options.computation.chunkSize ?? 32 }
        set { options.computation.chunkSize = newValue }
    }
    public var shard: Shard?
    public var forceResume = false
    /// Prompts whose |metric(clean) − metric(corrupt)| is below this leave the estimator errors
    /// (`TaskCheck`); always recorded in the run's options.
    public var minGap: Double {
        get { options.minGap }
        set { options.computation.minGap = newValue }
    }

    public init(model: GPT2Model, modelPath: String, modelHash: String, prompts: PromptSet, sites: [PatchSite],
                methods: [PatchMethod], direction: PatchDirection, tokenText: @escaping @Sendable (Int) -> String,
                options: PatchOptions = PatchOptions(), toolVersion: String) {
        self.model = model
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.prompts = prompts
        self.sites = sites
        self.methods = methods
        self.direction = direction
        self.tokenText = tokenText
        self.options = options
        self.toolVersion = toolVersion
    }

    /// `results.site` and quantities of the per-prompt metric rows.
    public static let metricSite = StoreName.metricSite, cleanQuantity = StoreName.clean, corruptQuantity = StoreName.corrupt

    /// Starts a run (or continues `resume`) and returns its id once it is complete;
    /// `progress(done, total)` after each stored chunk may throw `JobStop`.
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil,
                    progress: (Int, Int) throws -> Void = { _, _ in }, phase: (String) -> Void = { _ in }) throws -> Int64 {
        let examples = shard.map { $0.select(prompts.examples) } ?? prompts.examples
        if bound != nil {
            if !methods.contains(.atpStar) { throw JobError.atpStarBound(reason: "it bounds what AtP* missed: add atp-star to --methods") }
            if shard != nil { throw JobError.atpStarBound(reason: "it needs every prompt in one run: drop --shard") }
            if variants != [[]] { throw JobError.atpStarBound(reason: "AtP* runs on the model itself: drop --freeze and --decompose") }
            if let site = sites.first(where: \.isResidualStream) { throw JobError.atpStarBound(reason: PatchSite.boundResidualReason(site)) }
        }
        var recorded = options
        recorded.computation.minGap = minGap
        recorded.computation.sites = sites.map(\.rawValue).joined(separator: ",")
        recorded.computation.methods = methods.map(\.rawValue).joined(separator: ",")
        recorded.computation.direction = direction.rawValue
        recorded.computation.freeze = variants == [[]] ? nil : variants.map(\.name).joined(separator: ";")
        (recorded.computation.boundTop, recorded.computation.boundSubsets) = (bound?.top, bound?.subsets)
        (recorded.computation.boundInclusion, recorded.computation.boundConfidence) = (bound?.inclusion, bound?.confidence)
        recorded.computation.boundSeed = bound?.seed
        let (runID, done, completed) = try RunLifecycle.beginOrResume(
            db: db,
            run: RunRecord(command: StoreName.patchCommand, optionsJSON: recorded.json,
                           modelPath: modelPath,
                           modelHash: modelHash, lnMode: model.lnMode.rawValue, processingJSON: model.processing.json,
                           promptSetPath: prompts.path, promptSetHash: prompts.contentHash, nPrompts: prompts.examples.count,
                           toolVersion: toolVersion, shard: shard.map { ($0.index, $0.count) }),
            options: PatchOptions.self, resume: resume, forceResume: forceResume)
        if completed { return runID }
        try RunLifecycle.execute(db: db, runID: runID, total: examples.count, unit: "prompts", resume: "--resume \(runID)",
                                 doneCount: {
            let stored = (try? db.completedPromptIndices(runID: runID)) ?? []
            return examples.filter { stored.contains($0.index) }.count
        }, {
            var finished = examples.filter { done.contains($0.index) }.count
            try progress(finished, examples.count)
            for start in stride(from: 0, to: examples.count, by: chunkSize) {
                let chunk = Array(examples[start..<min(start + chunkSize, examples.count)])
                if chunk.allSatisfy({ done.contains($0.index) }) { continue }
                let (promptRows, values) = try compute(chunk)
                try db.writeBatch(runID: runID, prompts: promptRows, values: values, ranges: contiguousRanges(chunk.map(\.index)))
                finished += chunk.filter { !done.contains($0.index) }.count
                try progress(finished, examples.count)
            }
        }, finish: {
            phase("summarising (task check, estimator errors)")
            let stored = try db.results(runID: runID)
            var summaries = Self.summaries(from: stored, minGap: minGap)
            if let bound {
                phase("AtP* bound: \(bound.subsets) random subsets per prompt and site")
                summaries += try atpStarBoundRows(bound, stored: stored, examples: examples)
            }
            return (summaries, Self.errors(from: stored, minGap: minGap))
        })
        return runID
    }

    /// The rows of one chunk: prompts of equal length run as one batch.
    func compute(_ chunk: [PromptExample]) throws -> ([PromptRow], [ResultRow]) {
        var promptRows: [PromptRow] = [], values: [ResultRow] = []
        let byLength = Dictionary(grouping: chunk, by: { $0.tokens.count })
        for length in byLength.keys.sorted() {
            let group = byLength[length]!
            for start in stride(from: 0, to: group.count, by: batchSize) {
                let batch = Array(group[start..<min(start + batchSize, group.count)])
                // The variants share the two runs' forward passes, so the metric rows come once.
                for (v, freeze) in variants.enumerated() {
                    let results = try Patching.run(
                        model: model,
                        batch: .init(clean: batch.map(\.tokens), corrupt: batch.map { $0.corruptTokens! },
                                     answer: batch.map(\.answerID), wrong: batch.map { $0.wrongID! }),
                        sites: sites, methods: Set(methods), direction: direction, freeze: freeze)
                    for (ex, r) in zip(batch, results) {
                        if v == 0 {
                            promptRows.append(PromptRow(promptIndex: ex.index, prompt: ex.prompt, answer: ex.answer, wrong: ex.wrong,
                                                        nTokens: ex.tokens.count, corrupt: ex.corrupt, tokens: ex.tokens.map(tokenText)))
                            values += Self.metricRows(ex, r)
                        }
                        values += Self.siteRows(ex, r, variant: freeze.name)
                    }
                }
            }
        }
        return (promptRows, values)
    }

    /// A prompt's metric rows: clean, corrupt, first differing position.
    static func metricRows(_ ex: PromptExample, _ r: PromptPatching) -> [ResultRow] {
        [ResultRow(promptIndex: ex.index, site: metricSite, quantity: cleanQuantity, value: r.cleanMetric),
         ResultRow(promptIndex: ex.index, site: metricSite, quantity: corruptQuantity, value: r.corruptMetric),
         ResultRow(promptIndex: ex.index, site: metricSite, quantity: StoreName.firstDiff,
                   value: Double(firstDifferingPosition(ex.tokens, ex.corruptTokens!)))]
    }

    /// A prompt's site rows, each method's quantity named for the variant (`StoreName.frozen`).
    static func siteRows(_ ex: PromptExample, _ r: PromptPatching, variant: String) -> [ResultRow] {
        var values: [ResultRow] = []
        for row in r.rows {
            let i = row.index
            for (quantity, value) in [(StoreName.activation, row.activation), (StoreName.atp, row.atp), (StoreName.atpStar, row.atpStar)] {
                guard let value else { continue }
                values.append(ResultRow(promptIndex: ex.index, site: i.site.rawValue, layer: i.layer, position: i.position,
                                        head: i.head, quantity: StoreName.frozen(quantity, variant: variant), value: value))
            }
        }
        return values
    }

    /// The task check of a patch run's stored rows, as `summaries` rows (what a completed run
    /// stores, and what a merge of shards recomputes).
    public static func summaries(from stored: [ResultRow], minGap: Double) -> [SummaryRow] {
        taskCheck(from: stored, minGap: minGap)?.summaryRows ?? []
    }

    /// The estimators' errors from a run's stored rows (what a completed run stores, and what a
    /// merge of shards recomputes): prompts whose |gap| is below `minGap` left out, structural
    /// zeros (positions before the prompt's `first_diff`) left out of all but NMAE.
    /// Each variant of the model (`--freeze`, `--decompose`) on its own: its estimators against its
    /// activation patching, the method named as stored (`atp@freeze=mlp`).
    public static func errors(from stored: [ResultRow], minGap: Double) -> [ErrorRow] {
        var gaps: [Int: Double] = [:], clean: [Int: Double] = [:], corrupt: [Int: Double] = [:], firstDiff: [Int: Int] = [:]
        var activation: [String: [SampleKey: Double]] = [:], estimates: [String: [SampleKey: [PatchMethod: Double]]] = [:]
        for r in stored {
            if r.site == metricSite {
                switch r.quantity {
                case cleanQuantity: clean[r.promptIndex] = r.value
                case corruptQuantity: corrupt[r.promptIndex] = r.value
                case StoreName.firstDiff: firstDiff[r.promptIndex] = Int(r.value)
                default: break
                }
                continue
            }
            let (name, variant) = StoreName.variant(of: r.quantity)
            guard let layer = r.layer, let site = PatchSite(rawValue: r.site), let method = PatchMethod(rawValue: name) else { continue }
            let key = SampleKey(prompt: r.promptIndex, site: site, layer: layer, position: r.position, head: r.head)
            if method == .activation {
                activation[variant, default: [:]][key] = r.value
            } else {
                estimates[variant, default: [:]][key, default: [:]][method] = r.value
            }
        }
        for (p, c) in clean { if let x = corrupt[p] { gaps[p] = c - x } }
        return activation.keys.sorted().flatMap { variant in
            let samples = variantSamples(activation[variant]!, estimates[variant] ?? [:], firstDiff: firstDiff)
            return EstimatorError.errors(samples, gaps: gaps, minGap: minGap).map {
                ErrorRow(site: $0.site.rawValue, method: StoreName.frozen($0.method.rawValue, variant: variant), layer: $0.layer,
                         normalized: $0.normalized, metric: $0.metric.rawValue, value: $0.value)
            }
        }
    }

    struct SampleKey: Hashable { let prompt: Int; let site: PatchSite; let layer: Int; let position: Int?; let head: Int? }

    /// One variant's samples, in (prompt, site, layer, position, head) order.
    static func variantSamples(_ activation: [SampleKey: Double], _ estimates: [SampleKey: [PatchMethod: Double]],
                               firstDiff: [Int: Int]) -> [EstimatorError.Sample] {
        activation.keys.sorted {
            ($0.prompt, $0.site.rawValue, $0.layer, $0.position ?? -1, $0.head ?? -1)
                < ($1.prompt, $1.site.rawValue, $1.layer, $1.position ?? -1, $1.head ?? -1)
        }.map { k in
            // A position before the first differing token (for pattern_by_pos: the destination). A
            // site over all positions is 0 by construction only when the prompts are the same:
            // left to the exact-zero rule.
            let structural: Bool? = k.position.flatMap { p in firstDiff[k.prompt].map { p < $0 } }
            return EstimatorError.Sample(prompt: k.prompt, site: k.site, layer: k.layer, activation: activation[k]!,
                                         estimates: estimates[k] ?? [:], structuralZero: structural)
        }
    }
}
