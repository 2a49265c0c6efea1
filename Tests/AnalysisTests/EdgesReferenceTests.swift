import Foundation
import GPT2
import Testing

/// Edge attribution (EAP, EAP-IG with 5 steps) against hannamw/EAP-IG run on TransformerLens
/// models of the test checkpoints (Tests/Fixtures/reference/edges, made by
/// `scripts/reference/make_edges_fixtures.py`), the LayerNorm model and its LN-free twin, two IOI
/// pairs with BOS: every edge's score within 1e-4 of the tensor's scale (max(1, max |reference|)).
@Suite struct EdgesReferenceTests {
    static let fixtures = PatchingReferenceTests.fixtures

    struct Manifest: Decodable {
        typealias Prompt = PatchingReferenceTests.Manifest.Prompt
        struct Nodes: Decodable { let forward: [String], backward: [String] }
        struct Tolerance: Decodable { let eap_rel: Double, exact_rel: Double }
        let prompts: [Prompt]
        let nodes: Nodes
        let ig_steps: Int
        let tolerance: Tolerance
    }

    static let manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/edges/manifest.json")))

    static func model(_ name: String) throws -> GPT2Model {
        try GPT2Model(checkpoint: Checkpoint.open(fixtures.appendingPathComponent("models/\(name)").path), processing: .all)
    }

    @Test func theGraphHasHannamwsNodesOrderAndEdges() throws {
        let graph = try Self.model("tiny-ln").edgeGraph
        #expect(graph.upstream.map(\.name) == Self.manifest.nodes.forward)
        #expect(graph.downstream.map(\.name) == Self.manifest.nodes.backward)
        let ref = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("reference/edges/tiny-ln.safetensors"))
        let exact = try ref.floats("exact"), n = graph.upstream.count * graph.downstream.count
        #expect(graph.edgeCount == exact[0..<n].filter { !$0.isNaN }.count)
        for u in graph.upstream.indices {
            for v in graph.downstream.indices {
                #expect(graph.isEdge(u, v) == !exact[u * graph.downstream.count + v].isNaN)
            }
        }
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"], ["eap", "eap_ig"])
    func scoresMatchHannamw(name: String, method: String) throws {
        let model = try Self.model(name)
        let ref = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("reference/edges/\(name).safetensors"))
        let want = try ref.floats(method)
        let scale = max(1, want.filter { !$0.isNaN }.map { Double(abs($0)) }.max() ?? 0)
        var worst = 0.0, checked = 0
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let scores = try model.edgeAttribution(clean: prompt.tokens, corrupt: prompt.corrupt_tokens, answer: prompt.answer_id,
                                                   wrong: prompt.wrong_id, igSteps: method == "eap_ig" ? Self.manifest.ig_steps : nil)
            let n = scores.values.count
            for (i, got) in scores.values.enumerated() {
                let w = want[p * n + i]
                #expect(got.isNaN == w.isNaN, "\(name) \(method) prompt \(p) entry \(i): edge or not")
                guard !w.isNaN else { continue }
                let diff = Double(abs(got - w)) / scale
                worst = max(worst, diff)
                #expect(diff <= Self.manifest.tolerance.eap_rel, "\(name) \(method) prompt \(p) entry \(i): \(got) vs \(w)")
                checked += 1
            }
        }
        print("\(name) \(method): \(checked) edges, worst |lnlens − hannamw| / scale \(String(format: "%.1e", worst))")
        #expect(checked == Self.manifest.prompts.count * model.edgeGraph.edgeCount)
    }

    /// Path patching of every edge alone equals the TransformerLens hooks' within 1e-5 of the scale.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func exactEdgeEffectsMatchTransformerLensPathPatching(name: String) throws {
        let model = try Self.model(name)
        let ref = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("reference/edges/\(name).safetensors"))
        let want = try ref.floats("exact")
        let scale = max(1, want.filter { !$0.isNaN }.map { Double(abs($0)) }.max() ?? 0)
        var worst = 0.0, checked = 0
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let effects = try model.exactEdgeEffects(clean: prompt.tokens, corrupt: prompt.corrupt_tokens,
                                                     answer: prompt.answer_id, wrong: prompt.wrong_id)
            let n = effects.values.count
            for (i, got) in effects.values.enumerated() {
                let w = want[p * n + i]
                #expect(got.isNaN == w.isNaN, "\(name) exact prompt \(p) entry \(i): edge or not")
                guard !w.isNaN else { continue }
                let diff = Double(abs(got - w)) / scale
                worst = max(worst, diff)
                #expect(diff <= Self.manifest.tolerance.exact_rel, "\(name) exact prompt \(p) entry \(i): \(got) vs \(w)")
                checked += 1
            }
        }
        print("\(name) exact: \(checked) edges, worst |lnlens − TransformerLens| / scale \(String(format: "%.1e", worst))")
        #expect(checked == Self.manifest.prompts.count * model.edgeGraph.edgeCount)
    }
}
