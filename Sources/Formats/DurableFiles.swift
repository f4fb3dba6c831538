import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes that survive a crash: files are fsynced, and a directory is built in a hidden sibling
/// and renamed into place (an existing one is moved aside, then deleted), so a reader finds either
/// the whole old directory or the whole new one, never a partial one. Checkpoints use this.
package enum DurableFiles {
    /// Builds `directory` through `fill(temporaryDirectory)` and moves it into place atomically.
    package static func writeDirectory(_ directory: URL, _ fill: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent()
        let finalName = directory.lastPathComponent
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        let temp = parent.appendingPathComponent(".\(finalName).tmp-\(UUID().uuidString)")
        try fm.createDirectory(at: temp, withIntermediateDirectories: false)
        var committed = false
        defer { if !committed { try? fm.removeItem(at: temp) } }
        try fill(temp)
        try syncDirectory(temp)

        var old: URL?
        if fm.fileExists(atPath: directory.path) {
            let aside = parent.appendingPathComponent(".\(finalName).old-\(UUID().uuidString)")
            try rename(directory, aside)
            old = aside
        }
        do {
            try rename(temp, directory)
        } catch {
            if let old { try? rename(old, directory) }
            throw error
        }
        committed = true
        try syncDirectory(parent)
        if let old { try? fm.removeItem(at: old) }
    }

    /// Writes `data` and fsyncs it, so after a crash the file is either whole or absent.
    package static func write(_ data: Data, to url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw FormatError(url.path, "cannot write: \(String(cString: strerror(errno)))") }
        var ok = true
        data.withUnsafeBytes { raw in
            var done = 0
            while ok && done < raw.count {
                let n = posixWrite(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { ok = false } else { done += n }
            }
        }
        let why = String(cString: strerror(errno))
        let synced = ok && fsync(fd) == 0
        let closed = close(fd) == 0
        guard ok, synced, closed else { throw FormatError(url.path, "cannot write: \(why)") }
    }

    /// Makes entries created or renamed inside `url` durable.
    package static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw FormatError(url.path, "cannot open directory: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw FormatError(url.path, "cannot sync directory: \(String(cString: strerror(errno)))") }
    }

    package static func rename(_ from: URL, _ to: URL) throws {
        guard Foundation.rename(from.path, to.path) == 0 else {
            throw FormatError(to.path, "cannot rename \(from.lastPathComponent) to it: \(String(cString: strerror(errno)))")
        }
    }
}

#if canImport(Glibc)
private let posixWrite = Glibc.write
#else
private let posixWrite = Darwin.write
#endif
