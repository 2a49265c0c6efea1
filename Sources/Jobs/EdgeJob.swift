import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

/// Edge attribution over a prompt-pair set (`lnlens edges`): per prompt the EAP and/or EAP-IG
/// score of every edge of the model's `EdgeGraph` and the exact effect (path patching) of the
/// edges `exact` chooses, stored as it goes (one transaction per chunk, resumable to the rows of
/// an uninterrupted run); when the run completes, each edge's mean over prompts (aggregate rows),
/// the task check, and each estimator's NMAE against the exact effects.
public struct EdgeJob {
    public var model: GPT2Model
    public var modelPath: String
    public var modelHash: String
    public var prompts: PromptSet
    public var methods: [EdgeMethod]
    public var igSteps: Int
    public var exact: ExactEdges
    /// Token strings of ids, stored with each prompt.
    public var tokenText: @Sendable (Int) -> String
    /// Recorded with the run (the job adds methods, ig steps and exact).
    public var options: EdgeOptions
    public var toolVersion: String
    public var shard: Shard?
    public var forceResume = false

    /// `--exact all` is refused on graphs with more edges (3 forward passes each, per prompt).
    public static let maxExactEdges = 2000

    public init(model: GPT2Model, modelPath: String, modelHash: String, prompts: PromptSet, methods: [EdgeMethod],
                igSteps: Int = 5, exact: ExactEdges = .none, tokenText: @escaping @Sendable (Int) -> String,
                options: EdgeOptions = EdgeOptions(), toolVersion: String) {
        (self.model, self.modelPath, self.modelHash, self.prompts) = (model, modelPath, modelHash, prompts)
        (self.methods, self.igSteps, self.exact, self.tokenText) = (methods, igSteps, exact, tokenText)
        (self.options, self.toolVersion) = (options, toolVersion)
    }

    var chunkSize: Int { options.computation.chunkSize ?? 32 }

    /// What no run may be started with, checked before anything is stored.
    public static func check(methods: [EdgeMethod], igSteps: Int, exact: ExactEdges, graph: EdgeGraph, model: String) throws(EdgeError) {
        if igSteps < 1 { throw .badIGSteps(igSteps) }
        if case .top = exact, !methods.contains(.eap) { throw .exactTopNeedsEAP(exact.name) }
        if exact == .all, graph.edgeCount > maxExactEdges {
            throw .tooManyExact(model: model, edges: graph.edgeCount, limit: maxExactEdges)
        }
    }

    /// The options as stored with the run.
    var recorded: EdgeOptions {
        var o = options
        o.computation.methods = methods.map(\.rawValue).joined(separator: ",")
        (o.computation.igSteps, o.computation.exact) = (methods.contains(.eapIG) ? igSteps : nil, exact.name)
        o.computation.minGap = options.minGap
        return o
    }

    /// Starts a run (or continues `resume`) and returns its id once it is complete;
    /// `progress(done, total)` after each stored chunk may throw `JobStop`.
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil,
                    progress: (Int, Int) throws -> Void = { _, _ in }, phase: (String) -> Void = { _ in }) throws -> Int64 {
        try Self.check(methods: methods, igSteps: igSteps, exact: exact, graph: model.edgeGraph, model: ModelPath.shortName(modelPath))
        let examples = shard.map { $0.select(prompts.examples) } ?? prompts.examples
        let (runID, done, completed) = try RunLifecycle.beginOrResume(
            db: db,
            run: RunRecord(command: StoreName.edgesCommand, optionsJSON: recorded.json, modelPath: modelPath, modelHash: modelHash,
                           lnMode: model.lnMode.rawValue, processingJSON: model.processing.json, promptSetPath: prompts.path,
                           promptSetHash: prompts.contentHash, nPrompts: prompts.examples.count, toolVersion: toolVersion,
                           shard: shard.map { ($0.index, $0.count) }),
            options: EdgeOptions.self, resume: resume, forceResume: forceResume)
        if completed { return runID }
        let minGap = options.minGap
        try RunLifecycle.execute(db: db, runID: runID, total: examples.count, unit: "prompts", resume: "--resume \(runID)",
                                 doneCount: {
            let stored = (try? db.completedPromptIndices(runID: runID)) ?? []
            return examples.filter { stored.contains($0.index) }.count
        }, {
            var finished = examples.filter { done.contains($0.index) }.count
            try progress(finished, examples.count)
            for start in stride(from: 0, to: examples.count, by: chunkSize) {
                let chunk = examples[start..<min(start + chunkSize, examples.count)].filter { !done.contains($0.index) }
                if chunk.isEmpty { continue }
                let (promptRows, values, edges) = try compute(chunk)
                try db.writeBatch(runID: runID, prompts: promptRows, values: values, edges: edges,
                                  ranges: contiguousRanges(chunk.map(\.index)))
                finished += chunk.count
                try progress(finished, examples.count)
            }
        }, finish: {
            phase("summarising (means over prompts, task check, NMAE against exact)")
            return (Self.summaries(from: try db.results(runID: runID), edges: try db.edges(runID: runID, aggregate: false),
                                   minGap: minGap), [])
        }, aggregates: { Self.aggregates(from: try db.edges(runID: runID, aggregate: false)) })
        return runID
    }

    /// The rows of a chunk, prompt by prompt: its prompt, its clean and corrupt metric, its edges.
    func compute(_ chunk: [PromptExample]) throws -> ([PromptRow], [ResultRow], [EdgeRow]) {
        var promptRows: [PromptRow] = [], values: [ResultRow] = [], edges: [EdgeRow] = []
        let graph = model.edgeGraph
        for ex in chunk {
            let (clean, corrupt, answer, wrong) = (ex.tokens, ex.corruptTokens!, ex.answerID, ex.wrongID!)
            promptRows.append(PromptRow(promptIndex: ex.index, prompt: ex.prompt, answer: ex.answer, wrong: ex.wrong,
                                        nTokens: clean.count, corrupt: ex.corrupt, tokens: clean.map(tokenText)))
            values += [
                ResultRow(promptIndex: ex.index, site: StoreName.metricSite, quantity: StoreName.clean,
                          value: try model.logitDifference(clean, answer: answer, wrong: wrong)),
                ResultRow(promptIndex: ex.index, site: StoreName.metricSite, quantity: StoreName.corrupt,
                          value: try model.logitDifference(corrupt, answer: answer, wrong: wrong)),
            ]
            var eap: EdgeScores?
            for method in methods {
                let scores = try model.edgeAttribution(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong,
                                                       igSteps: method == .eapIG ? igSteps : nil)
                if method == .eap { eap = scores }
                edges += Self.rows(scores, prompt: ex.index, method: method.stored, only: graph.edges)
            }
            if let chosen = exact.edges(graph, eap: eap) {
                let effects = try model.exactEdgeEffects(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong, edges: chosen)
                edges += Self.rows(effects, prompt: ex.index, method: StoreName.exact, only: chosen)
            }
        }
        return (promptRows, values, edges)
    }

    /// One row per edge of `only`, named as hannamw/EAP-IG names its nodes.
    static func rows(_ scores: EdgeScores, prompt: Int, method: String, only: [EdgeIndex]) -> [EdgeRow] {
        let g = scores.graph
        return only.map { e in
            let down = g.downstream[e.v]
            return EdgeRow(promptIndex: prompt, upstream: g.upstream[e.u].name, downstream: down.node.name,
                           input: down.input?.rawValue, method: method, value: Double(scores[e]))
        }
    }

    /// Each edge's and method's mean over the prompts that have a row for it (with `--exact
    /// top-K`, the prompts whose top K hold the edge), summed in prompt order so that a run, a
    /// resumed run and the merge of its shards store the same bits.
    public static func aggregates(from perPrompt: [EdgeRow]) -> [EdgeRow] {
        var sums: [String: (row: EdgeRow, sum: Double, n: Int)] = [:], order: [String] = []
        for r in perPrompt.filter({ $0.promptIndex != nil }).sorted(by: { ($0.promptIndex!, $0.edgeKey) < ($1.promptIndex!, $1.edgeKey) }) {
            let key = r.edgeKey
            if let s = sums[key] { sums[key] = (s.row, s.sum + r.value, s.n + 1) } else { sums[key] = (r, r.value, 1); order.append(key) }
        }
        return order.sorted().map { key in
            let s = sums[key]!
            return EdgeRow(promptIndex: nil, upstream: s.row.upstream, downstream: s.row.downstream, input: s.row.input,
                           method: s.row.method, value: s.sum / Double(s.n), nPrompts: s.n)
        }
    }

    /// The task check (from the metric rows) and, for each estimator, its NMAE (%) and pair count
    /// against the exact effects over every (prompt, edge) that has both, prompts whose
    /// |clean − corrupt| is below `minGap` left out (as `patch` leaves them out of its errors).
    public static func summaries(from results: [ResultRow], edges: [EdgeRow], minGap: Double) -> [SummaryRow] {
        let task = taskCheck(from: results, minGap: minGap)
        let leftOut = Set(task?.smallGap ?? [])
        let perPrompt = edges.filter { $0.promptIndex != nil }.sorted { ($0.promptIndex!, $0.edgeKey) < ($1.promptIndex!, $1.edgeKey) }
        var exact: [String: Double] = [:]
        for r in perPrompt where r.method == StoreName.exact { exact["\(r.promptIndex!)/\(r.edge)"] = r.value }
        var out = task?.summaryRows ?? []
        guard !exact.isEmpty else { return out }
        for method in [StoreName.eap, StoreName.eapIG] {
            var estimate: [Double] = [], truth: [Double] = []
            for r in perPrompt where r.method == method {
                guard !leftOut.contains(r.promptIndex!), let x = exact["\(r.promptIndex!)/\(r.edge)"] else { continue }
                estimate.append(r.value)
                truth.append(x)
            }
            if estimate.isEmpty { continue }
            out += [SummaryRow(scope: StoreName.scopeEdges, key: method, metric: StoreName.nmae, value: Metrics.nmae(estimate, truth)),
                    SummaryRow(scope: StoreName.scopeEdges, key: method, metric: "n", value: Double(estimate.count))]
        }
        return out
    }
}
