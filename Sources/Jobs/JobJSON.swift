import Foundation
import Formats

/// The JSON files jobs leave for other tools (train summaries, the PTQ report). JSON has no NaN
/// or infinity; they are written as the strings "NaN", "Infinity" and "-Infinity", because a
/// non-finite figure must not fail a job whose work is already done.
package enum JobJSON {
    package static let nonFinite = (positive: "Infinity", negative: "-Infinity", nan: "NaN")

    package static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: nonFinite.positive, negativeInfinity: nonFinite.negative, nan: nonFinite.nan)
        return encoder
    }

    package static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: nonFinite.positive, negativeInfinity: nonFinite.negative, nan: nonFinite.nan)
        return decoder
    }

    /// Writes under a hidden temporary name in the same directory, then renames into place, so
    /// a reader (another process watching the run directory) finds the whole file or none.
    package static func write<T: Encodable>(_ value: T, to url: URL) throws {
        try writeData(try encoder().encode(value), to: url)
    }

    /// `missing` says which job writes the file, for the error when it is not there.
    package static func read<T: Decodable>(_ type: T.Type, from url: URL, missing: String) throws -> T {
        guard let data = try? Data(contentsOf: url) else { throw JobError("\(url.path) missing: \(missing)") }
        do {
            return try decoder().decode(type, from: data)
        } catch {
            throw JobError("\(url.path) is not a valid \(T.self) (\(error)); delete it and run the job again")
        }
    }
}

extension JobJSON {
    /// One compact JSON object per line (JSONL), written like `write`: whole or not at all.
    package static func writeLines<T: Encodable>(_ values: [T], to url: URL) throws {
        let encoder = encoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]   // one line per value
        var data = Data()
        for value in values {
            data.append(try encoder.encode(value))
            data.append(0x0A)
        }
        try writeData(data, to: url)
    }

    /// Bytes to `url` through a hidden temporary sibling and a rename.
    package static func writeData(_ data: Data, to url: URL) throws {
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw JobError("\(url.path): cannot create the directory \(directory.path) (\(error.localizedDescription)); choose a writable --out")
        }
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(UUID().uuidString)")
        do {
            try DurableFiles.write(data, to: temporary)
            try DurableFiles.rename(temporary, url)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw JobError("\(url.path) cannot be written (\(error)); choose a writable --out")
        }
    }
}

extension JobJSON {
    /// Fails now, naming `url`, if a file cannot be created beside it: for outputs written at the
    /// end of a long job.
    package static func checkWritable(_ url: URL) throws {
        let probe = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).probe-\(UUID().uuidString)")
        do {
            try writeData(Data(), to: probe)
        } catch {
            throw JobError("\(url.path) cannot be written (its directory is missing or read-only); choose a writable --out")
        }
        try? FileManager.default.removeItem(at: probe)
    }
}
