import Foundation
import GPT2
import TensorCore

// lnlens-bench: how fast the GPT-2 forward pass runs next to raw sgemm on the same machine.
// Every section is one function call that returns `[Measurement]`; a new section is one more call.

OpenBLASEnvironment.reexecWithFastKernelsIfNeeded()
MemoryTuning.keepFreedMemory()

func printErr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

func run() throws {
    guard let o = try BenchOptions.parse(Array(CommandLine.arguments.dropFirst())) else {
        print(BenchOptions.usage)
        return
    }
    func progress(_ s: String) { if !o.json { printErr("lnlens-bench: " + s) } }

    let config = RandomModel.config(layers: o.layers)
    progress("making random weights (\(config.parameterCount / 1_000_000)M parameters) and processing them")
    let t0 = now()
    let model = try RandomModel.make(config: config, seed: o.seed)
    let buildSeconds = now() - t0
    let tokens = RandomModel.tokens(count: o.tokens, dVocab: config.dVocab, seed: o.seed)
    let peakAfterBuild = procStatusMiB("VmHWM")
    let peakWasReset = resetPeakRSS()

    var report = BenchReport(
        blas: .init(coreName: BLASInfo.coreName, threads: BLASInfo.threads,
                    coretypeEnv: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], config: BLASInfo.config),
        setup: .init(model: o.layers == 12 ? "GPT-2 small shape (random weights)" : "GPT-2 small shape, \(o.layers) layers",
                     parameters: config.parameterCount, batch: 1, tokens: o.tokens, warmup: o.warmup,
                     runs: o.runs, seed: o.seed, buildSeconds: buildSeconds,
                     cpus: ProcessInfo.processInfo.activeProcessorCount, loadAverage1m: loadAverage()),
        measurements: [], derived: [:])

    func wanted(_ section: String) -> Bool { o.only?.contains(section) ?? true }
    var rates = SgemmRates()
    if wanted("core") || o.profile {
        progress("sgemm and forward, timed in rounds")
        let (coreRows, r) = try benchCore(model: model, tokens: tokens, options: o)
        rates = r
        report.measurements += coreRows
        let forwardRows = coreRows.filter { $0.section == "forward" }
        let noCache = forwardRows[0].ms.median, fullCache = forwardRows[1].ms.median
        report.derived["forward: every-hook cache overhead, %"] = (fullCache / noCache - 1) * 100
    }
    if wanted("backward") {
        progress("backward: gradients at every hook and of every parameter, 1×\(o.tokens) and 8×\(o.tokens)")
        let (backwardRows, backwardDerived) = try benchBackward(model: model, tokens: tokens, options: o)
        report.measurements += backwardRows
        report.derived.merge(backwardDerived) { $1 }
    }
    if wanted("patching") {
        progress("patching: activation sweep, AtP and AtP* on one IOI prompt pair")
        let (patchRows, patchDerived) = try benchPatching(model: model, options: o)
        report.measurements += patchRows
        report.derived.merge(patchDerived) { $1 }
    }
    if wanted("edges") {
        progress("edges: EAP, EAP-IG and circuit evaluation on one IOI prompt pair")
        let (rows, derived) = try benchEdges(model: model, options: o)
        report.measurements += rows
        report.derived.merge(derived) { $1 }
    }
    if wanted("dla") {
        progress("dla: direct logit attribution and exact direct effect over IOI prompts")
        report.measurements += try benchDLA(model: model, options: o)
    }

    if wanted("analyses") {
        progress("analyses: sinks, norms, lens and neurons jobs over 100 windows of 128 tokens, beside a plain forward")
        let (rows, derived) = try benchAnalyses(model: model, options: o)
        report.measurements += rows
        report.derived.merge(derived) { $1 }
    }

    if wanted("analyses") || wanted("compare") {
        progress("analyses: the compare job of three models over 100 windows of 128 tokens, beside one forward per model")
        let (rows, derived) = try benchCompare(model: model, options: o)
        report.measurements += rows
        report.derived.merge(derived) { $1 }
    }

    if wanted("training") {
        progress("training: optimizer steps (forward, backward, clipping, AdamW) on the embedded and GPT-2 small shapes")
        let (trainRows, trainDerived) = try benchTraining(options: o)
        report.measurements += trainRows
        report.derived.merge(trainDerived) { $1 }
    }

    if o.profile {
        progress("profile")
        report.measurements += try benchProfile(model: model, tokens: tokens, rates: rates, options: o)
        if wanted("backward") { report.measurements += try benchBackwardProfile(model: model, tokens: tokens, options: o) }
    }

    let hwm = procStatusMiB("VmHWM")
    report.memory = .init(peakAfterBuildMiB: peakAfterBuild, peakDuringMeasurementsMiB: peakWasReset ? hwm : nil,
                          peakProcessMiB: peakWasReset ? nil : hwm, rssEndMiB: procStatusMiB("VmRSS"))
    print(o.json ? report.json() : report.table())
}

do {
    try run()
} catch {
    printErr("lnlens-bench: error: \((error as? LocalizedError)?.errorDescription ?? String(describing: error))")
    exit(1)
}
