import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

/// Circuits and their faithfulness (`lnlens circuit`): from a completed `edges` run, for each
/// method the circuits its mean scores select (top-n, greedy or threshold, pruned as hannamw's
/// `evaluate_graph` prunes), each evaluated on every prompt pair of the run with
/// `GPT2Model.circuitMetric` (every edge outside the circuit carries the corrupted run's
/// activation). Per prompt the clean, corrupted and circuit metrics are stored as results; when
/// the run completes, each circuit's curve point (means over prompts, normalised as
/// (mean metric − mean corrupt) / (mean clean − mean corrupt)) and its edges.
public struct CircuitJob {
    /// A stored prompt pair, tokenized again.
    public struct Pair: Sendable {
        public let row: PromptRow
        public let clean: [Int], corrupt: [Int]
        public let answer: Int, wrong: Int
    }

    public var model: GPT2Model
    public var edges: EdgeRunReport
    public var pairs: [Pair]
    public var circuits: [CircuitSpec]
    public var options: CircuitOptions
    public var toolVersion: String
    public var forceResume = false

    public init(model: GPT2Model, edges: EdgeRunReport, pairs: [Pair], circuits: [CircuitSpec], options: CircuitOptions,
                toolVersion: String) {
        (self.model, self.edges, self.pairs, self.circuits, self.options, self.toolVersion) = (model, edges, pairs, circuits, options, toolVersion)
    }

    var chunkSize: Int { options.computation.chunkSize ?? 8 }

    /// The edges run's prompt pairs tokenized by `tokenizer` as the run did (`prependBOS`),
    /// checked against the stored token counts.
    public static func pairs(_ rows: [PromptRow], runID: Int64, tokenizer: some TextEncoder, prependBOS: Bool) throws(CircuitError) -> [Pair] {
        try rows.map { (r) throws(CircuitError) -> Pair in
            let bos = prependBOS ? [tokenizer.endOfTextID] : []
            guard let corruptText = r.corrupt, let wrongText = r.wrong else { throw .promptChanged(runID: runID, prompt: r.promptIndex, reason: "no corrupt prompt or wrong answer stored") }
            let clean = bos + tokenizer.encode(r.prompt), corrupt = bos + tokenizer.encode(corruptText)
            let answer = tokenizer.encode(r.answer), wrong = tokenizer.encode(wrongText)
            guard clean.count == r.nTokens, corrupt.count == r.nTokens, answer.count == 1, wrong.count == 1 else {
                throw .promptChanged(runID: runID, prompt: r.promptIndex, reason: "\(clean.count) tokens, stored \(r.nTokens)")
            }
            return Pair(row: r, clean: clean, corrupt: corrupt, answer: answer[0], wrong: wrong[0])
        }
    }

    /// The mean scores of `method` in `report` on `graph` (NaN where an edge has none).
    public static func scores(_ report: EdgeRunReport, method: String, graph: EdgeGraph) throws(CircuitError) -> EdgeScores {
        let nV = graph.downstream.count
        var up: [String: Int] = [:], down: [String: Int] = [:]
        for (u, n) in graph.upstream.enumerated() { up[n.name] = u }
        for (v, d) in graph.downstream.enumerated() { down[d.name] = v }
        var values = [Float](repeating: .nan, count: graph.upstream.count * nV)
        for e in report.edges {
            guard let mean = e.means[method] else { continue }
            guard let u = up[e.upstream], let v = down[e.downstream + (e.input.map { "<\($0)>" } ?? "")], graph.isEdge(u, v) else {
                throw .unknownEdge(runID: report.run.id ?? 0, edge: e.name)
            }
            values[u * nV + v] = Float(mean)
        }
        return EdgeScores(graph: graph, values: values)
    }

    /// The circuits of each method: at each size (top, greedy) or threshold, pruned when `prune`.
    public static func circuits(_ report: EdgeRunReport, graph: EdgeGraph, methods: [String], selection: CircuitSelectionKind,
                                points: [Double], prune: Bool) throws(CircuitError) -> [CircuitSpec] {
        var out: [CircuitSpec] = []
        for method in methods {
            let s = try scores(report, method: method, graph: graph)
            for p in points {
                let c = switch selection {
                case .top: Circuit.top(Int(p), of: s, prune: prune)
                case .greedy: Circuit.greedy(Int(p), of: s, prune: prune)
                case .threshold: Circuit.threshold(Float(p), of: s, prune: prune)
                }
                out.append(CircuitSpec(method: method, selection: selection, requested: p, circuit: c, scores: s))
            }
        }
        return out
    }

    /// The run as recorded: the edges run's model, processing and prompt set.
    var record: RunRecord {
        let e = edges.run
        return RunRecord(command: StoreName.circuitCommand, optionsJSON: options.json, modelPath: e.modelPath, modelHash: e.modelHash,
                         lnMode: e.lnMode, processingJSON: e.processingJSON, promptSetPath: e.promptSetPath,
                         promptSetHash: e.promptSetHash, nPrompts: e.nPrompts, toolVersion: toolVersion, shard: nil)
    }

    /// Starts a run (or continues `resume`) and returns its id once it is complete;
    /// `progress(done, total)` after each stored chunk may throw `JobStop`.
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil,
                    progress: (Int, Int) throws -> Void = { _, _ in }, phase: (String) -> Void = { _ in }) throws -> Int64 {
        let (runID, done, completed) = try RunLifecycle.beginOrResume(db: db, run: record, options: CircuitOptions.self, resume: resume,
                                                                      forceResume: forceResume)
        if completed { return runID }
        var curves: [FaithfulnessRow] = []   // from the stored rows, read once when the run finishes
        try RunLifecycle.execute(db: db, runID: runID, total: pairs.count, unit: "prompt pairs", resume: "--resume \(runID)", doneCount: {
            let stored = (try? db.completedPromptIndices(runID: runID)) ?? []
            return pairs.filter { stored.contains($0.row.promptIndex) }.count
        }, {
            var finished = pairs.filter { done.contains($0.row.promptIndex) }.count
            try progress(finished, pairs.count)
            for start in stride(from: 0, to: pairs.count, by: chunkSize) {
                let chunk = pairs[start..<min(start + chunkSize, pairs.count)].filter { !done.contains($0.row.promptIndex) }
                if chunk.isEmpty { continue }
                try db.writeBatch(runID: runID, prompts: chunk.map(\.row), values: try compute(chunk), edges: [],
                                  ranges: contiguousRanges(chunk.map(\.row.promptIndex)))
                finished += chunk.count
                try progress(finished, pairs.count)
            }
        }, finish: {
            phase("summarising (means over prompts, task check)")
            let results = try db.results(runID: runID)
            curves = Self.curves(results, circuits: circuits)
            return (taskCheck(from: results, minGap: EdgeOptions(json: edges.run.optionsJSON).minGap)?.summaryRows ?? [], [])
        }, complete: { summaries in
            try db.finishCircuitRun(runID: runID, summaries: summaries, faithfulness: curves, circuitEdges: circuits.flatMap(Self.edgeRows))
        })
        return runID
    }

    /// Per prompt: its clean and corrupted metric, and every circuit's metric (one forward each).
    func compute(_ chunk: [Pair]) throws -> [ResultRow] {
        var rows: [ResultRow] = []
        for p in chunk {
            let pair = try model.circuitPair(clean: p.clean, corrupt: p.corrupt, answer: p.answer, wrong: p.wrong)
            let i = p.row.promptIndex
            rows += [ResultRow(promptIndex: i, site: StoreName.metricSite, quantity: StoreName.clean, value: pair.cleanMetric),
                     ResultRow(promptIndex: i, site: StoreName.metricSite, quantity: StoreName.corrupt, value: pair.corruptMetric)]
            for c in circuits {
                rows.append(ResultRow(promptIndex: i, site: StoreName.circuitSite, quantity: c.quantity,
                                      value: try model.circuitMetric(c.circuit, pair, prune: false)))
            }
        }
        return rows
    }

    /// Each circuit's point from the per-prompt rows: the means over the prompts that have all
    /// three metrics, summed in prompt order, and (mean − mean corrupt) / (mean clean − mean corrupt).
    public static func curves(_ results: [ResultRow], circuits: [CircuitSpec]) -> [FaithfulnessRow] {
        var clean: [Int: Double] = [:], corrupt: [Int: Double] = [:], metric: [String: [Int: Double]] = [:]
        for r in results {
            if r.site == StoreName.metricSite, r.quantity == StoreName.clean { clean[r.promptIndex] = r.value }
            if r.site == StoreName.metricSite, r.quantity == StoreName.corrupt { corrupt[r.promptIndex] = r.value }
            if r.site == StoreName.circuitSite { metric[r.quantity, default: [:]][r.promptIndex] = r.value }
        }
        return circuits.compactMap { c in
            let m = metric[c.quantity] ?? [:]
            let prompts = m.keys.filter { clean[$0] != nil && corrupt[$0] != nil }.sorted()
            guard !prompts.isEmpty else { return nil }
            func mean(_ x: [Int: Double]) -> Double { prompts.reduce(0) { $0 + x[$1]! } / Double(prompts.count) }
            let (mc, ml, mx) = (mean(m), mean(clean), mean(corrupt))
            let normalized = ml != mx ? (mc - mx) / (ml - mx) : nil
            return FaithfulnessRow(method: c.method, selection: c.selection.rawValue, requested: c.requested, edges: c.circuit.edgeCount,
                                   metric: mc, clean: ml, corrupt: mx, normalized: normalized, nPrompts: prompts.count)
        }
    }

    /// A circuit's edges as stored, each with the score that selected it.
    static func edgeRows(_ c: CircuitSpec) -> [CircuitEdgeRow] {
        c.circuit.edges.map { e in
            let g = c.circuit.graph, down = g.downstream[e.downstream]
            return CircuitEdgeRow(method: c.method, selection: c.selection.rawValue, requested: c.requested, upstream: g.upstream[e.upstream].name,
                                  downstream: down.node.name, input: down.input?.rawValue,
                                  score: Double(c.scores[e.upstream, e.downstream]))
        }
    }
}
