import ArgumentParser
import Foundation
import TensorCore

@main
struct LNLens: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lnlens",
        abstract: "Mechanistic interpretability of GPT-2 and its LayerNorm-free twin.",
        subcommands: [InspectCommand.self, TokenizeCommand.self, RunCommand.self, ExportCommand.self, PromptsCommand.self, DLACommand.self, PatchCommand.self, MergeCommand.self, ReportCommand.self, PlotCommand.self, RunsCommand.self, QueryCommand.self, DiffCommand.self, MigrateCommand.self, TrainCommand.self, RemoveLNCommand.self, EvalCommand.self])

    /// `--batch-size -1` becomes `--batch-size=-1`: the argument parser would take `-1` for a
    /// flag and report a missing value, where the option's own check says what is wrong.
    static func joiningNegativeValues(_ arguments: [String]) -> [String] {
        var out: [String] = []
        for argument in arguments {
            if let last = out.last, last.hasPrefix("--"), !last.contains("="), last != "--",
               argument.hasPrefix("-"), Double(argument) != nil {
                out[out.count - 1] = last + "=" + argument
            } else {
                out.append(argument)
            }
        }
        return out
    }

    static func main() {
        OpenBLASEnvironment.reexecWithFastKernelsIfNeeded()
        MemoryTuning.keepFreedMemory()
        do {
            var command = try parseAsRoot(Self.joiningNegativeValues(Array(CommandLine.arguments.dropFirst())))
            try command.run()
        } catch let error as LocalizedError {
            // Our own errors: one line naming what was wrong and what to do, non-zero exit.
            printErr("lnlens: error: \(error.errorDescription ?? String(describing: error))")
            Foundation.exit(1)
        } catch {
            // Help and version requests print as usual; usage errors get one line, like ours.
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            printErr("lnlens: error: \(message) (see 'lnlens help')")
            Foundation.exit(code.rawValue)
        }
    }
}
