import ArgumentParser
import TensorCore

@main
struct LNLens: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lnlens",
        abstract: "Mechanistic interpretability of GPT-2 and its LayerNorm-free twin.",
        subcommands: [])

    static func main() {
        OpenBLASEnvironment.reexecWithFastKernelsIfNeeded()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
