import Foundation

/// Where lnlens finds what it ships: the embedded models (`models/`, with the GPT-2 tokenizer in
/// `models/tokenizer`) and prompt sets (`prompts/`). The first of: `$LNLENS_HOME`;
/// `../share/lnlens` beside the executable's real path (`make install`); the checkout the
/// executable was built in (searched upward from it); the current folder. The training text the
/// embedded models were made from is in `corpus/`.
public enum Resources {
    public static var home: URL {
        let fm = FileManager.default
        if let home = ProcessInfo.processInfo.environment["LNLENS_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home)
        }
        var exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        if let real = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { exe = URL(fileURLWithPath: real) }
        func ships(_ d: URL) -> Bool {
            fm.fileExists(atPath: d.appendingPathComponent("models/tokenizer/vocab.json").path)
        }
        var dir = exe.deletingLastPathComponent()
        let installed = dir.deletingLastPathComponent().appendingPathComponent("share/lnlens")
        if ships(installed) { return installed }
        while dir.path != "/" {
            if ships(dir) { return dir }
            dir.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: fm.currentDirectoryPath)
    }

    /// `models/` of `home`.
    public static var models: URL { home.appendingPathComponent("models") }
    /// `prompts/` of `home`.
    public static var prompts: URL { home.appendingPathComponent("prompts") }
    /// `corpus/` of `home` (the training and held-out text of the embedded models).
    public static var corpus: URL { home.appendingPathComponent("corpus") }
}
