import Foundation
import GPT2
import TensorCore
import Tokenizer
import Training

extension RemoveLNCommand {
    /// `--plan`: the run checked as training would check it, one pass timed when it fits in
    /// memory, printed as text or (`--json`) as `RemovalPlan` encodes it. Nothing is written.
    func printPlan(_ model: GPT2Model, recipe: RemovalRecipe, settings: TrainingSettings, layerNorms: FakeLayerNorms,
                   tokenizer: GPT2Tokenizer) throws {
        let corpus = try flags.loadCorpus(tokenizer: tokenizer, vocabSize: model.config.dVocab, window: settings.seqLen)
        try Trainer.check(model: model, corpus: corpus, settings: settings, layerNorms: layerNorms)
        var plan = RemovalPlan(recipe: recipe, settings: settings, layerNorms: layerNorms, config: model.config,
                               parameterFloats: model.parameters.table.count, corpusTokens: corpus.tokenCount)
        if plan.memory.fits {
            if !json { printErr("timing a training pass of \(min(settings.microBatch, settings.sequencesPerStep)) × \(settings.seqLen) tokens (two passes, the second timed)…") }
            let trainer = try Trainer(model: model, corpus: corpus, settings: settings, layerNorms: layerNorms)
            let (pass, update) = try trainer.timeOnePass()
            plan = plan.measured(pass: pass, update: update)
        }
        if json { return try printJSON(plan) }
        for line in Self.planText(plan, corpus: corpus.path) { print(line) }
    }

    /// The plan in lines of text: the learning rate at its key points only (`--json` has every step).
    static func planText(_ p: RemovalPlan, corpus: String) -> [String] {
        func lr(_ x: Double) -> String { String(format: "%.2e", x) }
        func bytes(_ n: Int) -> String { MemoryBudget.format(n) }
        func seconds(_ x: Double) -> String { x < 10 ? String(format: "%.3g s", x) : "\(Int(x.rounded()).formatted()) s" }
        let source = p.companionConfig.map { " (the companion's config.py \($0))" } ?? ""
        var lines = ["remove-ln plan, recipe \(p.recipe)\(source), \(p.nLayers) layers; nothing is trained or written"]
        if p.keepLN {
            lines.append("removals: none (--keep-ln: the same fine-tuning with every LayerNorm kept)")
        } else {
            lines.append("removals (the 0-based step from which each is fake; the log prints step s as s + 1):")
            for ph in p.phases {
                let at = ph.first == ph.last ? "step \(ph.first)" : "block i at \(ph.first) + \(ph.gap)i: steps \(ph.first)…\(ph.last)"
                lines.append("  " + padded(ph.kind, 9) + at)
            }
        }
        lines.append("learning rate: 0 → \(lr(p.lr)) over \(p.warmup) warm-up steps, then a cosine to \(lr(p.minLr)) at step \(p.scheduleSteps)")
        lines.append("  " + p.lrKeyPoints.map { "step \($0.step) (\($0.what)) \(lr($0.lr))" }.joined(separator: "; "))
        let stop = p.stepsRun < p.scheduleSteps ? " (--stop-at: the learning rates of the whole schedule)" : ""
        lines.append("steps: \(p.stepsRun) of a \(p.scheduleSteps)-step schedule\(stop); weight decay \(p.weightDecay), aux weight \(p.auxWeight)")
        let update = p.sigmaUpdate == SigmaUpdate.step.rawValue ? "once per optimizer step"
            : "after every micro-batch forward (ln_1's three calls: the cube)"
        lines.append("σ momentum \(String(format: "%.6g", p.momentum)) per \(p.momentumSequences) sequences in the recipe; σ updated "
                     + "\(update) with momentum \(String(format: "%.6g", p.momentumPerUpdate)) (--sigma-update \(p.sigmaUpdate))")
        func on(_ x: Bool) -> String { x ? "on" : "off" }
        lines.append("the companion's numerics: EOT targets masked \(on(p.maskEOTTargets)), aux target without BOS/EOT "
                     + "\(on(p.auxTargetSkipsBOSAndEOT)), weight decay on LN weights \(on(p.decayLNWeights)); \(Self.dropoutText(p.dropout))")
        let epochs = Double(p.tokensTotal) / Double(max(p.corpusTokens, 1))
        lines.append("tokens: \(p.sequencesPerStep) sequences × \(p.seqLen) = \(p.tokensPerStep.formatted()) per step, "
                     + "\(p.tokensTotal.formatted()) in all (\(String(format: "%.2f", epochs))× the \(p.corpusTokens.formatted()) tokens of \(corpus))")
        let m = p.memory
        let available = m.available.map { "; \(bytes($0)) available" } ?? ""
        lines.append("memory: \(bytes(m.parameters)) parameters + \(bytes(m.gradientsAndMoments)) gradients and AdamW moments + "
                     + "\(bytes(m.activations)) for one pass of \(min(p.microBatch, p.sequencesPerStep)) sequences = \(bytes(m.total))\(available)")
        if let t = p.time {
            lines.append("time: \(p.passesPerStep) passes × \(seconds(t.passSeconds)) + \(seconds(t.updateSeconds)) update = "
                         + "\(seconds(t.stepSeconds)) per step; \(p.stepsRun) steps ≈ \(ProgressLine.duration(t.totalSeconds))")
            lines.append("  (\(t.basis); the σ measurement before step 0 and checkpoint writes are not included)")
        } else {
            lines.append("time: not measured — one pass does not fit in memory; lower --micro-batch (sequences per pass) or --seq-len")
        }
        return lines
    }

    /// `dropout off`, or the three probabilities (`--plan`'s line).
    static func dropoutText(_ d: DropoutRates) -> String {
        func p(_ x: Double) -> String { String(format: "%g", x) }
        return d.isZero ? "dropout off" : "dropout embd \(p(d.embd)), attn \(p(d.attn)), resid \(p(d.resid))"
    }
}
