import Foundation
import GPT2
import Testing

/// Circuits against hannamw/EAP-IG run on TransformerLens models of the test checkpoints
/// (Tests/Fixtures/reference/circuit, made by `scripts/reference/make_circuit_fixtures.py`), the
/// LayerNorm model and its LN-free twin, the two IOI pairs with BOS of the edges fixtures:
/// `Circuit.top`/`greedy`/`threshold` select the edge sets of its `apply_topn`/`apply_greedy`/
/// `apply_threshold` (from lnlens's own EAP scores; thresholds in threshold.json), `pruned()` is its
/// `prune`, and `circuitMetric` its `evaluate_graph` within 1e-5 of the scale
/// max(1, |m_clean|, |m_corrupt|).
@Suite struct CircuitReferenceTests {
    static let fixtures = PatchingReferenceTests.fixtures

    struct Manifest: Decodable {
        typealias Prompt = PatchingReferenceTests.Manifest.Prompt
        struct Sizes: Decodable {
            let topn: [Int], greedy: [Int]
            let topnEdges: [Int], greedyEdges: [Int]
            enum CodingKeys: String, CodingKey {
                case topn, greedy
                case topnEdges = "topn.edges", greedyEdges = "greedy.edges"
            }
        }
        struct Tolerance: Decodable { let metric_rel: Double }
        let prompts: [Prompt]
        let n: [String: [Sizes]]
        let tolerance: Tolerance
    }

    static let manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/circuit/manifest.json")))

    /// threshold.json: per model and prompt, the thresholds (ascending) and the edges each keeps after pruning.
    struct ThresholdManifest: Decodable {
        struct Points: Decodable {
            let threshold: [Double], edges: [Int]
            enum CodingKeys: String, CodingKey { case threshold, edges = "threshold.edges" }
        }
        let thresholds: [String: [Points]]
    }

    static let thresholds = try! JSONDecoder().decode(
        ThresholdManifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/circuit/threshold.json")))

    /// One model's fixtures: the masks of a key as circuits, the metrics as doubles.
    struct Reference {
        let file: SafetensorsFile
        let graph: EdgeGraph

        /// `family`: "" for {name}.safetensors, "threshold" for {name}.threshold.safetensors.
        init(_ name: String, _ graph: EdgeGraph, family: String = "") throws {
            let file = family.isEmpty ? "\(name).safetensors" : "\(name).\(family).safetensors"
            self.file = try SafetensorsFile(url: CircuitReferenceTests.fixtures.appendingPathComponent("reference/circuit/\(file)"))
            self.graph = graph
        }

        func circuits(_ key: String) throws -> [Circuit] {
            let flat = try file.floats(key), n = graph.upstream.count * graph.downstream.count
            return stride(from: 0, to: flat.count, by: n).map { Circuit(graph: graph, mask: flat[$0..<($0 + n)].map { $0 != 0 }) }
        }

        func metrics(_ key: String) throws -> [Double] { try file.floats(key).map(Double.init) }
    }

    static func setUp(_ name: String) throws -> (GPT2Model, Reference) {
        let model = try EdgesReferenceTests.model(name)
        return (model, try Reference(name, model.edgeGraph))
    }

    static func pair(_ model: GPT2Model, _ p: Manifest.Prompt) throws -> CircuitPair {
        try model.circuitPair(clean: p.tokens, corrupt: p.corrupt_tokens, answer: p.answer_id, wrong: p.wrong_id)
    }

    static func scale(_ pair: CircuitPair) -> Double { max(1, abs(pair.cleanMetric), abs(pair.corruptMetric)) }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func selectionsMatchHannamw(name: String) throws {
        let (model, ref) = try Self.setUp(name)
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let sizes = Self.manifest.n[name]![p]
            let scores = try model.edgeAttribution(clean: prompt.tokens, corrupt: prompt.corrupt_tokens,
                                                   answer: prompt.answer_id, wrong: prompt.wrong_id)
            for (i, want) in try ref.circuits("p\(p).topn.mask").enumerated() {
                #expect(Circuit.top(sizes.topn[i], of: scores) == want, "\(name) prompt \(p) apply_topn(\(sizes.topn[i]))")
                #expect(want.edgeCount == sizes.topnEdges[i])
            }
            for (i, want) in try ref.circuits("p\(p).topn_raw.mask").enumerated() {
                #expect(Circuit.top(sizes.topn[i], of: scores, prune: false) == want,
                        "\(name) prompt \(p) apply_topn(\(sizes.topn[i]), prune=False)")
            }
            for (i, want) in try ref.circuits("p\(p).greedy.mask").enumerated() {
                #expect(Circuit.greedy(sizes.greedy[i], of: scores) == want, "\(name) prompt \(p) apply_greedy(\(sizes.greedy[i]))")
                #expect(want.edgeCount == sizes.greedyEdges[i])
            }
        }
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func pruneMatchesHannamw(name: String) throws {
        let (_, ref) = try Self.setUp(name)
        for p in Self.manifest.prompts.indices {
            let given = try ref.circuits("p\(p).random.mask"), want = try ref.circuits("p\(p).random.pruned")
            for (g, w) in zip(given, want) {
                #expect(g.pruned() == w, "\(name) prompt \(p): \(g.edgeCount) edges pruned to \(g.pruned().edgeCount), hannamw \(w.edgeCount)")
                #expect(w.pruned() == w)
            }
        }
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func circuitMetricsMatchEvaluateGraph(name: String) throws {
        let (model, ref) = try Self.setUp(name)
        var worst = 0.0, checked = 0
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let pair = try Self.pair(model, prompt), scale = Self.scale(pair)
            for key in ["topn", "greedy", "random"] {
                for (circuit, want) in zip(try ref.circuits("p\(p).\(key).mask"), try ref.metrics("p\(p).\(key).metric")) {
                    let got = try model.circuitMetric(circuit, pair)
                    let diff = abs(got - want) / scale
                    worst = max(worst, diff)
                    #expect(diff <= Self.manifest.tolerance.metric_rel,
                            "\(name) prompt \(p) \(key) (\(circuit.edgeCount) edges): \(got) vs hannamw \(want)")
                    checked += 1
                }
            }
        }
        print("\(name): \(checked) circuits, worst |lnlens − evaluate_graph| / scale \(String(format: "%.1e", worst))")
        #expect(checked == Self.manifest.prompts.indices.reduce(0) { n, p in
            n + Self.manifest.n[name]![p].topn.count + Self.manifest.n[name]![p].greedy.count + 2 })
    }

    /// `Circuit.threshold` (pruned and not) from lnlens's own EAP scores keeps hannamw's
    /// `apply_threshold` edge sets, and `circuitMetric` of each is its `evaluate_graph`.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func thresholdSelectionsMatchHannamw(name: String) throws {
        let (model, _) = try Self.setUp(name)
        let ref = try Reference(name, model.edgeGraph, family: "threshold")
        var worst = 0.0, checked = 0
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let points = Self.thresholds.thresholds[name]![p], pair = try Self.pair(model, prompt), scale = Self.scale(pair)
            let scores = try model.edgeAttribution(clean: prompt.tokens, corrupt: prompt.corrupt_tokens,
                                                   answer: prompt.answer_id, wrong: prompt.wrong_id)
            let wants = try ref.circuits("p\(p).threshold.mask"), raws = try ref.circuits("p\(p).threshold_raw.mask")
            let metrics = try ref.metrics("p\(p).threshold.metric")
            #expect(wants.count == points.threshold.count && raws.count == wants.count && metrics.count == wants.count)
            for (i, t) in points.threshold.enumerated() {
                let got = Circuit.threshold(Float(t), of: scores)
                #expect(got == wants[i], "\(name) prompt \(p) apply_threshold(\(t)): \(got.edgeCount) edges, hannamw \(wants[i].edgeCount)")
                #expect(wants[i].edgeCount == points.edges[i])
                #expect(Circuit.threshold(Float(t), of: scores, prune: false) == raws[i], "\(name) prompt \(p) apply_threshold(\(t), prune=False)")
                let diff = abs(try model.circuitMetric(got, pair) - metrics[i]) / scale
                worst = max(worst, diff)
                #expect(diff <= Self.manifest.tolerance.metric_rel, "\(name) prompt \(p) threshold \(t): |lnlens − evaluate_graph| / scale \(diff)")
                checked += 1
            }
            // Between the ends (every edge, none) the thresholds keep circuits of several sizes.
            #expect(Set(points.edges).count >= 4 && points.edges.first == scores.graph.edgeCount && points.edges.last == 0)
        }
        print("\(name): \(checked) threshold circuits, worst |lnlens − evaluate_graph| / scale \(String(format: "%.1e", worst))")
    }

    /// The whole graph is the clean run, the empty one the corrupted run (both as lnlens's plain
    /// forward computes them, and as the reference recorded them).
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func fullCircuitIsCleanRunEmptyIsCorrupted(name: String) throws {
        let (model, ref) = try Self.setUp(name)
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let pair = try Self.pair(model, prompt), scale = Self.scale(pair), tol = Self.manifest.tolerance.metric_rel
            #expect(abs(try model.circuitMetric(.full(model.edgeGraph), pair) - pair.cleanMetric) / scale <= tol)
            #expect(abs(try model.circuitMetric(.empty(model.edgeGraph), pair) - pair.corruptMetric) / scale <= tol)
            #expect(abs(pair.cleanMetric - (try ref.metrics("p\(p).metric.clean"))[0]) / scale <= tol)
            #expect(abs(pair.corruptMetric - (try ref.metrics("p\(p).metric.corrupt"))[0]) / scale <= tol)
            #expect(pair.cleanMetric != pair.corruptMetric)
        }
    }

    /// The curve of top-n circuits by lnlens's EAP scores: hannamw's metrics, 0 edges normalised
    /// to 0, every edge to 1.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func faithfulnessCurveMatchesHannamw(name: String) throws {
        let (model, ref) = try Self.setUp(name)
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let sizes = Self.manifest.n[name]![p], pair = try Self.pair(model, prompt)
            let scores = try model.edgeAttribution(clean: prompt.tokens, corrupt: prompt.corrupt_tokens,
                                                   answer: prompt.answer_id, wrong: prompt.wrong_id)
            let curve = try model.faithfulness(scores, sizes: sizes.topn, selection: .top, pair)
            let want = try ref.metrics("p\(p).topn.metric")
            #expect(curve.map(\.requested) == sizes.topn)
            #expect(curve.map(\.edges) == sizes.topnEdges)
            for (point, w) in zip(curve, want) {
                #expect(abs(point.metric - w) / Self.scale(pair) <= Self.manifest.tolerance.metric_rel, "\(name) prompt \(p) n \(point.requested)")
            }
            #expect(abs(curve.first!.normalized) < 1e-4 && abs(curve.last!.normalized - 1) < 1e-4)
            let greedy = try model.faithfulness(scores, sizes: sizes.greedy, selection: .greedy, pair)
            #expect(greedy.map(\.edges) == sizes.greedyEdges)
        }
    }
}
