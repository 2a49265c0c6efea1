import Analysis
import Foundation
import GPT2
import Testing

/// Activation patching and AtP on the linearised variants (`--freeze`) against TransformerLens
/// hooks (Tests/Fixtures/reference/freeze, made by `scripts/reference/make_freeze_fixtures.py`):
/// every site kind, both directions, the variants none, attention, mlp, ln, all, the LayerNorm
/// model and its LN-free twin, two IOI pairs with BOS. Every value within 1e-4 of its tensor's
/// scale (max(1, max |reference|)); in the fully frozen model AtP equals activation patching.
@Suite struct FreezeReferenceTests {
    static let fixtures = PatchingReferenceTests.fixtures

    struct Manifest: Decodable {
        typealias Prompt = PatchingReferenceTests.Manifest.Prompt
        struct Tolerance: Decodable { let rel: Double }
        let prompts: [Prompt]
        let tolerance: Tolerance
    }

    static let manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/freeze/manifest.json")))

    static let variants = ["none", "attention", "mlp", "ln", "all"]
    static let cases: [(String, PatchDirection)] = ["tiny-ln", "tiny-lnfree"].flatMap { m in PatchDirection.allCases.map { (m, $0) } }

    static func model(_ name: String) throws -> GPT2Model {
        try GPT2Model(checkpoint: Checkpoint.open(fixtures.appendingPathComponent("models/\(name)").path), processing: .all)
    }

    static func run(_ model: GPT2Model, _ prompt: Manifest.Prompt, _ direction: PatchDirection, _ freeze: Freeze) throws -> PromptPatching {
        try Patching.run(model: model, batch: .init(clean: [prompt.tokens], corrupt: [prompt.corrupt_tokens],
                                                    answer: [prompt.answer_id], wrong: [prompt.wrong_id]),
                         sites: PatchSite.allCases, methods: [.activation, .atp], direction: direction, freeze: freeze)[0]
    }

    @Test(arguments: 0..<4)
    func everyVariantSiteAndMethodMatchesTheReference(caseIndex: Int) throws {
        let (name, direction) = Self.cases[caseIndex]
        let model = try Self.model(name)
        let ref = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("reference/freeze/\(name).\(direction.rawValue).safetensors"))
        let L = model.config.nLayers, H = model.config.nHeads, Tmax = Self.manifest.prompts.map(\.tokens.count).max()!
        var worst: [String: Double] = [:], checked = 0
        for variant in Self.variants {
            let freeze = try #require(Freeze(name: variant))
            var reference: [String: [Float]] = [:], scale: [String: Double] = [:]
            for site in PatchSite.allCases {
                for key in ["activation", "atp"] {
                    let label = "\(site.rawValue).\(key)", values = try ref.floats("\(variant).\(label)")
                    reference[label] = values
                    scale[label] = max(1, values.filter { !$0.isNaN }.map { Double(abs($0)) }.max() ?? 0)
                }
            }
            for (p, prompt) in Self.manifest.prompts.enumerated() {
                let result = try Self.run(model, prompt, direction, freeze)
                for row in result.rows {
                    let o = PatchingReferenceTests.offset(row.index, prompt: p, L: L, H: H, Tmax: Tmax)
                    for (key, got) in [("activation", row.activation), ("atp", row.atp)] {
                        let label = "\(row.index.site.rawValue).\(key)", want = Double(reference[label]![o])
                        let value = try #require(got, "\(name) \(direction) \(variant) prompt \(p) \(row.index): no \(key)")
                        let diff = abs(value - want) / scale[label]!
                        worst["\(variant).\(key)"] = max(worst["\(variant).\(key)"] ?? 0, diff)
                        #expect(diff <= Self.manifest.tolerance.rel,
                                "\(name) \(direction) \(variant) prompt \(p) \(row.index) \(key): \(value) vs reference \(want)")
                        checked += 1
                    }
                }
            }
        }
        let line = worst.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.1e", $0.value))" }.joined(separator: ", ")
        print("\(name) \(direction): \(checked) values, worst |lnlens − reference| / scale: \(line)")
        #expect(checked == 2 * Self.variants.count * Self.manifest.prompts.reduce(0) { n, prompt in
            n + PatchSite.allCases.reduce(0) { $0 + SiteIndex.all($1, nLayers: L, nHeads: H, T: prompt.tokens.count).count }
        })
    }

    /// In the fully frozen model the function from any site on is affine: AtP is activation
    /// patching, up to float32 rounding, measured against the site kind's scale max(1, max
    /// |activation|) as `KernelTests.relativeError` takes it. That rounding is about 1e-6 of the
    /// scale on these models (the TransformerLens float32 reference differs by up to 1.02e-6; in
    /// float64 by 2e-15, manifest `self_checks`), so the bound is 2e-6: it fails on any error of
    /// the method, whose size is that of AtP's error in `none` (about 1e-2 of the scale here).
    @Test(arguments: 0..<4)
    func fullyFrozenAtPEqualsActivationPatching(caseIndex: Int) throws {
        let (name, direction) = Self.cases[caseIndex]
        let model = try Self.model(name)
        var worst = 0.0
        for prompt in Self.manifest.prompts {
            let rows = try Self.run(model, prompt, direction, .all).rows
            for site in PatchSite.allCases {
                let pairs = rows.filter { $0.index.site == site }.map { ($0.activation!, $0.atp!) }
                let scale = max(1, pairs.map { abs($0.0) }.max()!)
                let gap = pairs.map { abs($0.0 - $0.1) }.max()!
                worst = max(worst, gap / scale)
                #expect(gap <= 2e-6 * scale, "\(name) \(direction) \(site): |atp − activation| \(gap), scale \(scale)")
            }
        }
        print("\(name) \(direction): fully frozen, worst |atp − activation| / scale \(String(format: "%.1e", worst))")
    }

    /// Prompts batched together read their own frozen values: a batch of a pair and the same pair
    /// swapped (clean ↔ corrupt) gives each one's numbers run alone.
    @Test func batchedPromptsFreezeAtTheirOwnValues() throws {
        let model = try Self.model("tiny-ln"), p = Self.manifest.prompts[0]
        let swapped = Manifest.Prompt(tokens: p.corrupt_tokens, corrupt_tokens: p.tokens, answer_id: p.answer_id, wrong_id: p.wrong_id)
        for variant in ["attention", "mlp", "ln", "all"] {
            let freeze = try #require(Freeze(name: variant))
            let batched = try Patching.run(model: model, batch: .init(clean: [p.tokens, swapped.tokens], corrupt: [p.corrupt_tokens, swapped.corrupt_tokens],
                                                                      answer: [p.answer_id, p.answer_id], wrong: [p.wrong_id, p.wrong_id]),
                                           sites: PatchSite.allCases, methods: [.activation, .atp], direction: .denoise, freeze: freeze)
            for (b, alone) in [try Self.run(model, p, .denoise, freeze), try Self.run(model, swapped, .denoise, freeze)].enumerated() {
                for (x, y) in zip(batched[b].rows, alone.rows) {
                    #expect(abs(x.activation! - y.activation!) <= 1e-5 && abs(x.atp! - y.atp!) <= 1e-5, "\(variant) prompt \(b) \(x.index)")
                }
            }
        }
    }
}
