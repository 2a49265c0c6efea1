import ArgumentParser
import Foundation
import Report
import ResultsStore
import Support

/// `--db` and `--force` of the commands that draw stored runs, and the one way they write.
struct DrawOptions: ParsableArguments {
    @Option(help: "SQLite database to read.") var db = "results/lnlens.sqlite"
    @Flag(help: "Replace the output file if it exists.") var force = false
    @Option(help: ArgumentHelp("Prompt templates drawn per site in the layer × position patching maps, the largest first (0: all).",
                               valueName: "n"))
    var templates = FigureOptions.defaultTemplates

    var figureOptions: FigureOptions { FigureOptions(templates: templates) }

    func validate() throws {
        if templates < 0 { throw ValidationError("--templates \(templates): give 0 (all) or a positive number") }
    }

    /// Opens the database read-only and checks that `output` may be written (not the database,
    /// not an existing file without --force, in an existing folder) before any work is done.
    func open(output: String, option: String) throws -> ResultsDatabase {
        let database = try ResultsDatabase.openReadOnly(path: db)
        do {
            try Files.checkOutput(output, option: option, inputs: [db, db + "-wal", db + "-shm"], force: force)
        } catch {
            throw CLIError.io(error.description)
        }
        return database
    }

    /// Writes `text` to `output` atomically.
    func write(_ text: String, to output: String) throws {
        do {
            try Files.writeAtomically(Data(text.utf8), to: URL(fileURLWithPath: output))
        } catch {
            throw CLIError.io("cannot write \(output): \(error.description)")
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write one self-contained HTML file (inline SVG figures, nothing fetched) of stored runs, side by side.",
        discussion: """
            dla runs: per-head NMAE heatmaps, per-layer NMAE with bootstrap 95% intervals, DLA against the exact \
            direct effect, the heads with the largest direct effects. patch runs (drawn together, on shared colour \
            scales): per site and prompt template layer × position maps of activation patching beside AtP, and of \
            |activation patching| beside AtP*; layer × head maps of the z, q, k, v and pattern sites; AtP against \
            activation patching and AtP* against |activation patching|; the estimator errors. train, remove-ln and \
            eval runs: the loss curve with LayerNorm removals marked, and the loss tables. Hover a cell or a point \
            for its value.
            Example: lnlens report 1 2 --out results/report.html
            """)

    @Argument(help: ArgumentHelp("Runs to draw, e.g. a model's dla run and its LN-free twin's (see `lnlens runs`).", valueName: "run-id")) var runIDs: [Int64] = []
    @Option(help: ArgumentHelp("The HTML file to write.", valueName: "FILE.html")) var out: String
    @OptionGroup var options: DrawOptions

    func validate() throws {
        if runIDs.isEmpty { throw ValidationError("give at least one RUN_ID (list them with `lnlens runs`)") }
    }

    func run() throws {
        let database = try options.open(output: out, option: "--out")
        try options.write(try HTMLReport.html(db: database, runIDs: runIDs, options: options.figureOptions), to: out)
        print("wrote \(out) (run\(runIDs.count > 1 ? "s" : "") \(runIDs.map(String.init).joined(separator: ", ")))")
    }
}

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Write one figure of stored runs as a standalone SVG file (for a paper).",
        discussion: "Kinds:\n" + FigureKind.allCases.map { "  \($0.rawValue): \($0.summary)" }.joined(separator: "\n")
            + "\nExample: lnlens plot head-nmae 1 2 --svg head-nmae.svg; lnlens plot patch-map 3 4 --templates 4 --svg maps.svg")

    @Argument(help: ArgumentHelp("The figure: \(FigureKind.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "KIND"))
    var kind: String
    @Argument(help: ArgumentHelp("Runs to draw (several: side by side, or on one axis for layer-nmae and loss).", valueName: "run-id")) var runIDs: [Int64] = []
    @Option(help: ArgumentHelp("The SVG file to write.", valueName: "FILE.svg")) var svg: String
    @OptionGroup var options: DrawOptions

    func validate() throws {
        guard FigureKind(rawValue: kind) != nil else {
            throw ValidationError("unknown figure '\(kind)': use one of \(FigureKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if runIDs.isEmpty { throw ValidationError("give at least one RUN_ID (list them with `lnlens runs`)") }
        if !svg.lowercased().hasSuffix(".svg") {
            throw ValidationError("--svg \(svg): plot writes SVG; give a file name ending in .svg (convert it to PNG afterwards if needed)")
        }
    }

    func run() throws {
        let database = try options.open(output: svg, option: "--svg")
        try options.write(try Figures.svg(FigureKind(rawValue: kind)!, db: database, runIDs: runIDs, options: options.figureOptions), to: svg)
        print("wrote \(svg) (\(kind) of run\(runIDs.count > 1 ? "s" : "") \(runIDs.map(String.init).joined(separator: ", ")))")
    }
}
