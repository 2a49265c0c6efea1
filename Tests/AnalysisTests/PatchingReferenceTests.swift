import Analysis
import Foundation
import GPT2
import TensorCore
import Testing

/// Activation patching, attribution patching and AtP* against TransformerLens and the paper's code
/// (Tests/Fixtures/reference/patching, made by `scripts/reference/make_models_and_fixtures.py
/// --patching`): every site kind, both directions, the LayerNorm model and its LN-free twin, four
/// IOI pairs with BOS, each prompt run alone. Every stored value within the manifest's atol (1e-4).
@Suite struct PatchingReferenceTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    struct Manifest: Decodable {
        struct Prompt: Decodable {
            let tokens: [Int]
            let corrupt_tokens: [Int]
            let answer_id: Int
            let wrong_id: Int
        }
        struct Tolerances: Decodable { let atol: Double }
        let prompts: [Prompt]
        let tolerances: Tolerances
    }

    static let manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/patching/manifest.json")))

    /// Offset of an index in a reference's [prompt, layer, …] layout (positions padded to Tmax).
    static func offset(_ i: SiteIndex, prompt p: Int, L: Int, H: Int, Tmax: Int) -> Int {
        let base = p * L + i.layer
        switch (i.site.hasPosition, i.site.hasHead) {
        case (true, false): return base * Tmax + i.position!
        case (false, true): return base * H + i.head!
        default:
            return i.site == .patternByPos ? (base * H + i.head!) * Tmax + i.position! : (base * Tmax + i.position!) * H + i.head!
        }
    }

    static let cases: [(String, PatchDirection)] = ["tiny-ln", "tiny-lnfree"].flatMap { m in PatchDirection.allCases.map { (m, $0) } }

    @Test(arguments: 0..<4)
    func everySiteAndMethodMatchesTheReference(caseIndex: Int) throws {
        let (name, direction) = Self.cases[caseIndex]
        let model = try GPT2Model(checkpoint: Checkpoint.open(Self.fixtures.appendingPathComponent("models/\(name)").path),
                                  processing: .all)
        let ref = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("reference/patching/\(name).\(direction.rawValue).safetensors"))
        let atol = Self.manifest.tolerances.atol
        let L = model.config.nLayers, H = model.config.nHeads
        let P = Self.manifest.prompts.count
        let Tmax = Self.manifest.prompts.map(\.tokens.count).max()!
        let metricClean = try ref.floats("metric.clean"), metricCorrupt = try ref.floats("metric.corrupt")
        var reference: [String: [Float]] = [:]
        for site in PatchSite.allCases {
            for key in ["activation", "atp", "atp_star"] { reference["\(site.rawValue).\(key)"] = try ref.floats("\(site.rawValue).\(key)") }
        }
        func offset(_ i: SiteIndex, prompt p: Int) -> Int { Self.offset(i, prompt: p, L: L, H: H, Tmax: Tmax) }
        var worst: [String: Double] = [:], checked = 0
        for (p, prompt) in Self.manifest.prompts.enumerated() {
            let result = try Patching.run(model: model,
                                          batch: .init(clean: [prompt.tokens], corrupt: [prompt.corrupt_tokens],
                                                       answer: [prompt.answer_id], wrong: [prompt.wrong_id]),
                                          sites: PatchSite.allCases, methods: Set(PatchMethod.allCases), direction: direction)[0]
            #expect(abs(result.cleanMetric - Double(metricClean[p])) <= atol, "\(name) prompt \(p) clean metric")
            #expect(abs(result.corruptMetric - Double(metricCorrupt[p])) <= atol, "\(name) prompt \(p) corrupt metric")
            #expect(result.rows.count == PatchSite.allCases.reduce(0) {
                $0 + SiteIndex.all($1, nLayers: L, nHeads: H, T: prompt.tokens.count).count
            })
            for row in result.rows {
                let o = offset(row.index, prompt: p)
                for (key, got) in [("activation", row.activation), ("atp", row.atp), ("atp_star", row.atpStar)] {
                    let label = "\(row.index.site.rawValue).\(key)"
                    let want = Double(reference[label]![o])
                    #expect(!want.isNaN, "\(name) \(direction) prompt \(p) \(row.index): the reference has no value there")
                    let value = try #require(got, "\(name) \(direction) prompt \(p) \(row.index): no \(key)")
                    let diff = abs(value - want)
                    worst[label] = max(worst[label] ?? 0, diff)
                    #expect(diff <= atol, "\(name) \(direction) prompt \(p) \(row.index) \(key): \(value) vs reference \(want)")
                    checked += 1
                }
            }
        }
        // Positions past a prompt's end are NaN in the reference: every other entry was compared.
        let compared = reference.values.reduce(0) { $0 + $1.filter { !$0.isNaN }.count }
        #expect(checked == compared, "\(checked) values compared, the reference has \(compared)")
        let line = worst.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1e", $0.value))" }.joined(separator: ", ")
        print("\(name) \(direction): \(checked) values, worst |lnlens − reference|: \(line)")
    }
}
