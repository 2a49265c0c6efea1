import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

/// Runs DLA against the exact direct effect over an input, storing every number as it goes.
///
/// Work is stored in chunks of consecutive prompt indices, each chunk in one transaction with
/// its progress marker; inside a chunk, equal-length sequences run as one batch. A run that was
/// interrupted (even by kill -9) is continued with `resume:` and ends with exactly the rows an
/// uninterrupted run stores, because chunk rows are upserts and summaries are computed from the
/// stored rows at the end. With a `shard` the run takes only that shard's prompts (text mode: its
/// windows), under their indices in the whole input; `MergeJob` combines the shards' runs.
public struct DLAJob {
    public var model: GPT2Model
    public var modelPath: String
    public var modelHash: String
    public var input: AttributionInput
    /// Decodes token ids for the stored prompt text in text mode.
    public var decode: @Sendable ([Int]) -> String
    /// Recorded with the run; its computation (batch and chunk sizes, `--min-gap`, `--bootstrap`)
    /// is what the job does.
    public var options: DLAOptions
    public var toolVersion: String
    /// Prompts per forward pass (`options`' `batch_size`).
    public var batchSize: Int {
        get { options.computation.batchSize ?? 32 }
        set { options.computation.batchSize = newValue }
    }
    /// Prompts stored per transaction (`options`' `chunk_size`).
    public var chunkSize: Int {
        get { options.computation.chunkSize ?? 64 }
        set { options.computation.chunkSize = newValue }
    }
    /// Bytes one forward batch may keep in activations (see `effectiveBatchSize`).
    public var memoryBudget = 2 << 30

    public init(model: GPT2Model, modelPath: String, modelHash: String, input: AttributionInput,
                decode: @escaping @Sendable ([Int]) -> String, options: DLAOptions = DLAOptions(), toolVersion: String) {
        self.model = model
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.input = input
        self.decode = decode
        self.options = options
        self.toolVersion = toolVersion
    }

    /// Resume even when another host's owner of the run was heard from recently.
    public var forceResume = false
    /// Only this shard of the input's units (nil: all of them). Recorded with the run; a run
    /// resumes only with the same shard.
    public var shard: Shard?
    /// The task check's `--min-gap` (prompt sets with `wrong`); always recorded in the options.
    public var minGap: Double {
        get { options.minGap }
        set { options.computation.minGap = newValue }
    }
    /// How the NMAE intervals resample; always recorded in the options.
    public var bootstrap: BootstrapScheme {
        get { options.bootstrap ?? .crossed }
        set { options.computation.bootstrap = newValue.rawValue }
    }

    /// What the run counts (its prompt indices, the unit of `progress`): prompts, text positions
    /// (`--text`), or windows (`--text --targets paper`).
    public var unit: String {
        switch input {
        case .prompts: "prompts"
        case .text(_, .nextToken): "positions"
        case .text(_, .lastTokenOfWindow): "windows"
        }
    }

    /// Starts a new run (or continues `resume`) and returns its id once it is complete.
    /// `progress(done, total)` is called after each stored chunk, in `unit`s; if it throws
    /// `JobStop`, the run stops there, marked interrupted (any other error: failed); either can be
    /// resumed. `phase` names the last step, the summaries (NMAE and its bootstrap intervals).
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil,
                    progress: (Int, Int) throws -> Void = { _, _ in }, phase: (String) -> Void = { _ in }) throws -> Int64 {
        let units = shard.map { $0.select(input.units) } ?? input.units
        let total = units.reduce(0) { $0 + $1.targets.count }
        var recorded = options
        (recorded.computation.minGap, recorded.computation.bootstrap) = (minGap, bootstrap.rawValue)
        let (runID, done, completed) = try RunLifecycle.beginOrResume(
            db: db,
            run: RunRecord(command: StoreName.dlaCommand, optionsJSON: recorded.json,
                           modelPath: modelPath, modelHash: modelHash,
                           lnMode: model.lnMode.rawValue, processingJSON: model.processing.json, promptSetPath: input.path,
                           promptSetHash: input.contentHash, nPrompts: input.count, toolVersion: toolVersion,
                           shard: shard.map { ($0.index, $0.count) }),
            options: DLAOptions.self, resume: resume, forceResume: forceResume)
        if completed { return runID }
        try RunLifecycle.execute(db: db, runID: runID, total: total, unit: unit, resume: "--resume \(runID)", doneCount: {
            let stored = (try? db.completedPromptIndices(runID: runID)) ?? []
            return units.reduce(0) { $0 + $1.targets.filter { stored.contains($0.prompt) }.count }
        }, {
            try runChunks(db: db, runID: runID, units: units, done: done, total: total, progress: progress)
        }, finish: {
            phase("summarising (NMAE, \(Metrics.bootstrapResamples.formatted()) bootstrap resamples)")
            return (Self.summaries(from: try db.results(runID: runID), minGap: minGap, bootstrap: bootstrap), [])
        })
        return runID
    }

    private func runChunks(db: ResultsDatabase, runID: Int64, units: [AttributionUnit], done: Set<Int>, total: Int,
                           progress: (Int, Int) throws -> Void) throws {
        // Chunks of consecutive units (of the shard) holding about `chunkSize` targets.
        var chunks: [[AttributionUnit]] = [[]]
        var inChunk = 0
        for unit in units {
            if inChunk >= chunkSize { chunks.append([]); inChunk = 0 }
            chunks[chunks.count - 1].append(unit)
            inChunk += unit.targets.count
        }
        var finished = units.reduce(0) { $0 + $1.targets.filter { done.contains($0.prompt) }.count }
        try progress(finished, total)
        for chunk in chunks where !chunk.isEmpty {
            let indices = chunk.flatMap { $0.targets.map(\.prompt) }
            if indices.allSatisfy(done.contains) { continue }
            var values: [ResultRow] = []
            var prompts: [PromptRow] = []
            let byLength = Dictionary(grouping: chunk, by: { $0.tokens.count })
            for length in byLength.keys.sorted() {
                let group = byLength[length]!
                let size = effectiveBatchSize(length: length, cachedPositions: group.map(\.targets.count).max())
                for start in stride(from: 0, to: group.count, by: size) {
                    let batch = Array(group[start..<min(start + size, group.count)])
                    var targets: [AttributionTarget] = []
                    for (row, unit) in batch.enumerated() {
                        for t in unit.targets {
                            targets.append(AttributionTarget(prompt: t.prompt, row: row, position: t.position,
                                                             answerID: t.answerID, wrongID: t.wrongID))
                            prompts.append(PromptRow(
                                promptIndex: t.prompt,
                                prompt: t.text ?? decode(Array(unit.tokens[max(0, t.position - 31)...t.position])),
                                answer: t.answer ?? decode([t.answerID]), wrong: t.wrong, nTokens: t.position + 1))
                        }
                    }
                    let out = try DirectLogitAttribution.attribute(model: model, tokens: batch.map(\.tokens),
                                                                   targets: targets)
                    for r in out.rows {
                        let site = r.component.site
                        values.append(ResultRow(promptIndex: r.prompt, site: site.name, layer: site.layer, head: site.head,
                                                quantity: StoreName.dla, value: r.dla))
                        values.append(ResultRow(promptIndex: r.prompt, site: site.name, layer: site.layer, head: site.head,
                                                quantity: StoreName.directEffect, value: r.directEffect))
                    }
                    for err in out.perTargetSumError {
                        values.append(ResultRow(promptIndex: err.prompt, site: Component.residPost.site.name,
                                                quantity: StoreName.componentsSumError, value: err.error))
                    }
                    values += try taskMetricRows(batch: batch, clean: out.logitDifferences)
                }
            }
            // One marker per run of consecutive indices: a shard's chunk skips the other shards' prompts.
            try db.writeBatch(runID: runID, prompts: prompts, values: values, ranges: contiguousRanges(indices))
            finished += indices.filter { !done.contains($0) }.count
            try progress(finished, total)
        }
    }

    /// `batchSize`, lowered so that one batch's activations stay within `memoryBudget` bytes: the
    /// forward's arena as DLA runs it (`ForwardPass.footprint`: one block's buffers reused, no
    /// logits) and the hooks DLA caches at `cachedPositions` positions of each sequence (nil:
    /// all). Attention patterns grow with T², so long text windows run fewer at a time.
    public func effectiveBatchSize(length T: Int, cachedPositions: Int? = nil) -> Int {
        let cfg = model.config
        let cache = DirectLogitAttribution.hooks(nLayers: cfg.nLayers).count * (cachedPositions ?? T) * cfg.dModel
            * MemoryLayout<Float>.stride
        let perSequence = ForwardPass.footprint(B: 1, T: T, config: cfg, logits: .none, backward: false) + cache
        return max(1, min(batchSize, memoryBudget / max(1, perSequence)))
    }

    /// The task metric rows of a batch of prompt-set units: each target's clean logit difference,
    /// and, for prompts with `corrupt`, that of the corrupted prompt (one more forward pass).
    func taskMetricRows(batch: [AttributionUnit], clean: [(prompt: Int, value: Double)]) throws -> [ResultRow] {
        var rows = clean.map { ResultRow(promptIndex: $0.prompt, site: StoreName.metricSite, quantity: StoreName.clean, value: $0.value) }
        let paired = batch.filter { u in u.corruptTokens != nil && u.targets.count == 1 && u.targets[0].wrongID != nil }
        guard !paired.isEmpty else { return rows }
        let pass = try model.run(paired.map { $0.corruptTokens! }, ForwardOptions(logits: .none))
        let values = LogitDifference.values(model: model, pass: pass, answer: paired.map { $0.targets[0].answerID },
                                            wrong: paired.map { $0.targets[0].wrongID! })
        for (u, v) in zip(paired, values) {
            rows.append(ResultRow(promptIndex: u.targets[0].prompt, site: StoreName.metricSite, quantity: StoreName.corrupt, value: v))
        }
        return rows
    }

    /// The summaries of a dla run with these result rows (in any order): what a run stores when it
    /// finishes, and what `MergeJob` stores for shards merged into one run. NMAE over heads
    /// (global, per head, per layer) with bootstrap 95% intervals, the decomposition check, and
    /// the task check (prompt sets with `wrong`).
    public static func summaries(from stored: [ResultRow], minGap: Double = TaskCheck.defaultMinGap,
                                 bootstrap: BootstrapScheme = .crossed) -> [SummaryRow] {
        let rows = attributions(from: stored)
        let nmae = NMAESummary(rows: rows)
        let intervals = NMAEIntervals(rows: rows, scheme: bootstrap)
        func withInterval(_ scope: String, _ heads: HeadSet, _ value: Double, _ ci: ConfidenceInterval?) -> [SummaryRow] {
            let key = heads.description
            return [SummaryRow(scope: scope, key: key, metric: StoreName.nmae, value: value)]
                + (ci.map {
                    [SummaryRow(scope: scope, key: key, metric: StoreName.nmaeCILow, value: $0.low),
                     SummaryRow(scope: scope, key: key, metric: StoreName.nmaeCIHigh, value: $0.high)]
                } ?? [])
        }
        // Keys in the order of their stored strings (L0H0, L0H1, L0H10, …), as runs always stored them.
        var out = withInterval(StoreName.scopeHeads, .all, nmae.headsGlobal, intervals.headsGlobal)
        out += nmae.perHead.sorted { $0.key.description < $1.key.description }.flatMap {
            guard case let .head(l, h) = $0.key else { return [SummaryRow]() }
            return withInterval(StoreName.scopeHead, .head(layer: l, head: h), $0.value, intervals.perHead[$0.key])
        }
        out += nmae.perLayer.sorted { HeadSet.layer($0.key).description < HeadSet.layer($1.key).description }.flatMap {
            withInterval(StoreName.scopeLayer, .layer($0.key), $0.value, intervals.perLayer[$0.key])
        }
        let check = stored.filter { $0.quantity == StoreName.componentsSumError }.map(\.value).max() ?? 0
        out.append(SummaryRow(scope: StoreName.scopeCheck, key: "components_sum", metric: "max_abs_error", value: check))
        return out + (taskCheck(from: stored, minGap: minGap)?.summaryRows ?? [])
    }

    /// Pairs stored `dla` and `direct_effect` rows back into attributions, in (prompt, component) order.
    public static func attributions(from stored: [ResultRow]) -> [ComponentAttribution] {
        struct Key: Hashable { let prompt: Int; let component: Component }
        var dla: [Key: Double] = [:], de: [Key: Double] = [:]
        for r in stored {
            guard let c = Component(site: r.site, layer: r.layer, head: r.head) else { continue }
            let key = Key(prompt: r.promptIndex, component: c)
            if r.quantity == StoreName.dla { dla[key] = r.value } else if r.quantity == StoreName.directEffect { de[key] = r.value }
        }
        return dla.keys.sorted { ($0.prompt, $0.component) < ($1.prompt, $1.component) }.compactMap { key -> ComponentAttribution? in
            guard let a = dla[key], let e = de[key] else { return nil }
            return ComponentAttribution(prompt: key.prompt, component: key.component, dla: a, directEffect: e)
        }
    }
}
