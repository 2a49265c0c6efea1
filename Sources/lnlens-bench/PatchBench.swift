import Analysis
import Foundation
import GPT2
import Support
import Tokenizer

/// Patching on one IOI prompt pair (15 tokens with BOS), timed in rounds with one plain forward:
/// the activation sweep over resid_pre, attn_out and mlp_out; AtP over the default sites; the
/// paper's resid_pre sweep with AtP (what scripts/reference/time_tl_patching.py times in
/// TransformerLens).
func benchPatching(model: GPT2Model, options o: BenchOptions) throws -> ([Measurement], [String: Double]) {
    let tok = try GPT2Tokenizer.load(directory: Resources.models.appendingPathComponent("tokenizer"))
    let bos = tok.endOfTextID
    let clean = [bos] + tok.encode("When Mary and John went to the store, John gave a drink to")
    let corrupt = [bos] + tok.encode("When Mary and John went to the store, Mary gave a drink to")
    let batch = Patching.Batch(clean: [clean], corrupt: [corrupt], answer: [tok.encode(" Mary")[0]], wrong: [tok.encode(" John")[0]])
    let paper = "resid_pre activation sweep + AtP (the paper's experiment)"
    let jobs: [(String, [PatchSite], Set<PatchMethod>, Freeze)] = [
        ("activation sweep resid_pre, attn_out, mlp_out", [.residPre, .attnOut, .mlpOut], [.activation], []),
        ("AtP over the default sites (resid_pre, attn_out, mlp_out, z)", PatchSite.defaults, [.atp], []),
        (paper, [.residPre], [.activation, .atp], []),
        ("AtP* over the default sites (QK fix, GradDrop)", PatchSite.defaults, [.atpStar], []),
        (paper + ", --freeze all", [.residPre], [.activation, .atp], .all),
        ("activation + AtP over the default sites", PatchSite.defaults, [.activation, .atp], []),
        ("activation + AtP over the default sites, --freeze all", PatchSite.defaults, [.activation, .atp], .all),
    ]
    var bodies: [() throws -> Void] = [{
        let pass = try model.run([clean], ForwardOptions(logits: .last))
        withExtendedLifetime(pass) { blackHole(pass.logits[0]) }
    }]
    for (_, sites, methods, freeze) in jobs {
        bodies.append {
            let r = try Patching.run(model: model, batch: batch, sites: sites, methods: methods, direction: .denoise, freeze: freeze)
            blackHole(Float(r[0].cleanMetric))
        }
    }
    let timings = try measureInRounds(warmup: 1, runs: max(3, o.runs / 3), bodies)
    var rows = [Measurement(section: "patching", name: "one forward, 1×\(clean.count) tokens (logits at the last position)",
                            seconds: timings[0].seconds, cores: timings[0].cores)]
    var derived: [String: Double] = [:]
    let forward = Summary(timings[0].seconds).median
    for (i, job) in jobs.enumerated() {
        let t = timings[i + 1]
        rows.append(Measurement(section: "patching", name: "per prompt: " + job.0, seconds: t.seconds, cores: t.cores))
        derived["patching: \(job.0) / one forward"] = Summary(t.seconds).median / forward
    }
    // A linearised variant against the same work on the model itself.
    for (frozen, plain) in [(5, 3), (7, 6)] {
        derived["patching: \(jobs[frozen - 1].0) / not frozen"] = Summary(timings[frozen].seconds).median / Summary(timings[plain].seconds).median
    }
    // Where the sweep's time goes (the engine's own phases, one more run).
    let phases = PhaseTimes()
    let patched = try model.run([corrupt], ForwardOptions(logits: .none, retainForBackward: true))
    let donor = try model.run([clean], ForwardOptions(logits: .none, retainForBackward: true))
    let patches = [PatchSite.residPre, .attnOut, .mlpOut].flatMap { site in
        SiteIndex.all(site, nLayers: model.config.nLayers, nHeads: model.config.nHeads, T: clean.count).map {
            ActivationPatch(prompt: 0, layer: $0.layer, kind: site == .residPre ? .residPre : (site == .attnOut ? .attnOut : .mlpOut),
                            position: $0.position)
        }
    }
    _ = try model.patchedFinal(base: patched, donor: donor, patches: patches, profile: phases)
    for (phase, seconds) in phases.seconds { derived["patching sweep phase \(phase), ms"] = seconds * 1e3 }
    return (rows, derived)
}
