import Foundation
import ResultsStore

/// The figures `lnlens plot` writes alone and `lnlens report` puts together.
public enum FigureKind: String, CaseIterable, Sendable {
    case headNMAE = "head-nmae"
    case layerNMAE = "layer-nmae"
    case dlaScatter = "dla-scatter"
    case patchMap = "patch-map"
    case patchHeadMap = "patch-head-map"
    case patchScatter = "patch-scatter"
    case loss
    case sinkRates = "sink-rates"
    case norms
    case lens
    case neuronAblation = "neuron-ablation"
    case neuronNullSpace = "neuron-null-space"

    /// One line for `--help`.
    public var summary: String {
        switch self {
        case .headNMAE: "dla runs: layer × head heatmap of per-head NMAE, side by side on one colour scale"
        case .layerNMAE: "dla runs: per-layer NMAE with bootstrap 95% intervals, all runs on one axis"
        case .dlaScatter: "dla runs: DLA against the exact direct effect per (prompt, head), coloured by layer"
        case .patchMap: "patch runs: layer × position maps per site and prompt template, activation patching beside each estimator"
        case .patchHeadMap: "patch runs: layer × head maps of the z, q, k, v and pattern sites, activation patching beside each estimator"
        case .patchScatter: "patch runs: AtP against activation patching, AtP* against |activation patching|, coloured by site"
        case .loss: "train / remove-ln runs: loss per step with the LayerNorm removal steps marked"
        case .sinkRates: "sinks runs: layer × head heatmap of the attention-sink rate, side by side on one scale"
        case .norms: "norms runs: residual-stream L2 norm per hook, position 0 and the rest, on a log scale, all runs on one axis"
        case .lens: "lens runs: probability and rank of the answer (or next token) per residual read, all runs on one axis"
        case .neuronAblation: "neurons runs: change in loss and entropy (%) with the first k entropy neurons mean-ablated, all runs on one axis"
        case .neuronNullSpace: "neurons runs: every last-layer neuron's null-space fraction against ‖w_out‖, one panel per run"
        }
    }

    /// The run commands this figure draws.
    var commands: [String] {
        switch self {
        case .headNMAE, .layerNMAE, .dlaScatter: [StoreName.dlaCommand]
        case .patchMap, .patchHeadMap, .patchScatter: [StoreName.patchCommand]
        case .loss: [StoreName.trainCommand, StoreName.removeLNCommand]
        case .sinkRates: [StoreName.sinksCommand]
        case .norms: [StoreName.normsCommand]
        case .lens: [StoreName.lensCommand]
        case .neuronAblation, .neuronNullSpace: [StoreName.neuronsCommand]
        }
    }
}

/// How a figure is drawn, where the CLI lets the user choose.
public struct FigureOptions: Sendable {
    /// Templates drawn per position site in the patching maps (the largest first); 0 for all.
    public var templates: Int
    /// Templates drawn unless `--templates` says otherwise.
    public static let defaultTemplates = 2

    public init(templates: Int = defaultTemplates) {
        self.templates = templates
    }
}

/// Stored runs as figures.
public enum Figures {
    /// The runs `ids` (each once, each existing), in the order given.
    static func records(db: ResultsDatabase, ids: [Int64]) throws -> [RunRecord] {
        if ids.isEmpty { throw ReportError.noRuns }
        var seen = Set<Int64>()
        return try ids.map { id in
            guard seen.insert(id).inserted else { throw ReportError.duplicateRun(id: id) }
            guard let run = try db.verifiedRun(id: id) else { throw ResultsStoreError.noSuchRun(id: id, path: db.path) }
            return run
        }
    }

    /// One figure of `runIDs` as a standalone SVG file: refused when a run is of another command
    /// or has nothing for this figure.
    public static func svg(_ kind: FigureKind, db: ResultsDatabase, runIDs: [Int64],
                           options: FigureOptions = FigureOptions()) throws -> String {
        let runs = try records(db: db, ids: runIDs)
        for run in runs where !kind.commands.contains(run.command) {
            throw ReportError.wrongCommand(kind: kind.rawValue, runID: run.id!, command: run.command, expected: kind.commands)
        }
        func refuse(_ run: RunRecord, _ reason: String) -> ReportError {
            .nothingToDraw(kind: kind.rawValue, runID: run.id!, reason: reason)
        }
        let figure: SVG
        switch kind {
        case .headNMAE, .layerNMAE, .dlaScatter:
            let data = try runs.map { run in
                let d = try DLAData(db: db, run: run)
                if d.pairs.isEmpty { throw refuse(run, "has no head rows (site result, quantities dla and direct_effect) stored") }
                return d
            }
            figure = kind == .headNMAE ? DLAFigures.headNMAE(data) : kind == .layerNMAE ? DLAFigures.layerNMAE(data)
                : DLAFigures.scatter(data)
        case .patchMap, .patchHeadMap, .patchScatter:
            var data: [PatchData] = []
            for run in runs {
                let d = try PatchData(db: db, run: run)
                if kind == .patchMap && d.positionSites.isEmpty {
                    throw refuse(run, "has no activation-patching rows at \(StoreName.positionSites.joined(separator: ", "))")
                }
                if kind == .patchHeadMap && d.headSites.isEmpty {
                    throw refuse(run, "has no activation-patching rows at \(PatchData.headSites.joined(separator: ", "))")
                }
                if kind == .patchScatter && !d.sites.contains(where: { !d.estimators(site: $0).isEmpty }) {
                    throw refuse(run, "has no atp or atp_star rows beside its activation-patching rows")
                }
                data.append(d)
            }
            switch kind {
            case .patchMap: figure = PatchFigures.positionMaps(data, templates: options.templates)
            case .patchHeadMap: figure = PatchFigures.headMaps(data)
            default: figure = PatchFigures.scatter(data)
            }
        case .loss:
            let data = try runs.map { run in
                let d = try TrainingData(db: db, run: run)
                if d.steps.isEmpty { throw refuse(run, "has no training steps stored") }
                return d
            }
            figure = TrainingFigures.loss(data)
        case .sinkRates, .norms, .lens:
            let data = try runs.map { run in
                let d = try AnalysisData(db: db, run: run)
                if d.values.isEmpty { throw refuse(run, "has no summaries stored (it did not complete)") }
                return d
            }
            figure = kind == .sinkRates ? AnalysisFigures.sinkRates(data) : kind == .norms ? AnalysisFigures.norms(data)
                : AnalysisFigures.lens(data)
        case .neuronAblation, .neuronNullSpace:
            let data = try runs.map { run in
                let d = try NeuronData(db: db, run: run)
                if d.analysis.values.isEmpty { throw refuse(run, "has no summaries stored (it did not complete)") }
                if kind == .neuronNullSpace && d.neurons.isEmpty { throw refuse(run, "has no w_out rows (its shard did not hold ablation k = 0)") }
                return d
            }
            figure = kind == .neuronAblation ? NeuronFigures.ablationCurves(data) : NeuronFigures.nullSpace(data)
        }
        return Layout.padded(figure).render(label: "\(kind.rawValue) of run\(runs.count > 1 ? "s" : "") "
                                            + runs.map { "\($0.id!)" }.joined(separator: ", "), standalone: true) + "\n"
    }
}
