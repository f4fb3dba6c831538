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
        let data = try encoder().encode(value)
        let directory = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(UUID().uuidString)")
        do {
            try DurableFiles.write(data, to: temporary)
            try DurableFiles.rename(temporary, url)
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        }
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
