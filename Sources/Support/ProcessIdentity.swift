import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Which process this is, in a form another process can check later: host name, pid, and the
/// process's start (boot id and start time in clock ticks), so that a reused pid or a reboot
/// does not pass for the same process.
public struct ProcessIdentity: Equatable, Sendable, Codable {
    public var host: String
    public var pid: Int
    /// `<boot id>/<start ticks>` on Linux; empty where it cannot be read.
    public var start: String

    public init(host: String, pid: Int, start: String) {
        self.host = host
        self.pid = pid
        self.start = start
    }

    /// This process.
    public static let current: ProcessIdentity = {
        let pid = Int(getpid())
        return ProcessIdentity(host: hostName(), pid: pid, start: startStamp(pid: pid) ?? "")
    }()

    /// Whether this process is still running, when that can be known from here: `true` or
    /// `false` on the same host (and boot), `nil` for a process on another host.
    public var isAlive: Bool? {
        let me = Self.current
        guard host == me.host else { return nil }
        guard !start.isEmpty, let bootNow = Self.bootID(), start.hasPrefix(bootNow + "/") else {
            // Another boot of this host (or no /proc): a pid from before is gone.
            return start.isEmpty ? (kill(pid_t(pid), 0) == 0 || errno == EPERM) : false
        }
        return Self.startStamp(pid: pid) == start
    }

    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "unknown-host" }
        return String(cString: buffer)
    }

    static func bootID() -> String? {
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `<boot id>/<starttime>` of `pid` from /proc, or nil when there is no such process.
    static func startStamp(pid: Int) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces): state is field 3, starttime 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let boot = bootID() else { return nil }
        return "\(boot)/\(fields[19])"
    }
}
