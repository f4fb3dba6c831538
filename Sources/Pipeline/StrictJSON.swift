import Foundation
import Tensors

/// A config the user has to fix: one line naming the file, the key and what to do.
package struct ConfigError: UserFacingError {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// Decodes JSON into a Codable type and refuses keys the type does not have.
///
/// A misspelt key ("stpes") would otherwise be ignored and its default used silently. The check
/// needs no hand-written key lists: the decoded value is encoded again, and every key of the
/// input that holds a value but does not come back is one the type does not know.
package enum StrictJSON {
    package static func decode<T: Codable>(_ type: T.Type, from data: Data, file: String) throws -> T {
        let input: Any
        do {
            input = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ConfigError("\(file): not valid JSON (\(error.localizedDescription)); fix the syntax")
        }
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw ConfigError("\(file): missing key \"\(path(context.codingPath + [key]))\"; add it")
        } catch let DecodingError.typeMismatch(_, context) {
            throw ConfigError("\(file): \"\(path(context.codingPath))\" has the wrong type (\(context.debugDescription)); fix its value")
        } catch let DecodingError.valueNotFound(_, context) {
            throw ConfigError("\(file): \"\(path(context.codingPath))\" is null; give it a value or remove it")
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigError("\(file): \"\(path(context.codingPath))\": \(context.debugDescription)")
        }
        let known = try JSONSerialization.jsonObject(with: JSONEncoder().encode(value))
        if let unknown = firstUnknownKey(input, known, at: "") {
            throw ConfigError("\(file): unknown key \"\(unknown)\"; check its spelling against the documented keys")
        }
        return value
    }

    static func path(_ keys: [CodingKey]) -> String {
        keys.reduce("") { p, k in k.intValue.map { "\(p)[\($0)]" } ?? (p.isEmpty ? k.stringValue : "\(p).\(k.stringValue)") }
    }

    /// The first key (as a dotted path) of `input` with a non-null value that `known` lacks.
    package static func firstUnknownKey(_ input: Any, _ known: Any, at prefix: String) -> String? {
        if let object = input as? [String: Any] {
            let knownObject = known as? [String: Any] ?? [:]
            for key in object.keys.sorted() {
                let here = prefix.isEmpty ? key : "\(prefix).\(key)"
                guard let value = object[key], !(value is NSNull) else { continue }
                guard let knownValue = knownObject[key] else { return here }
                if let found = firstUnknownKey(value, knownValue, at: here) { return found }
            }
        } else if let array = input as? [Any], let knownArray = known as? [Any] {
            for (i, element) in array.enumerated() where i < knownArray.count {
                if let found = firstUnknownKey(element, knownArray[i], at: "\(prefix)[\(i)]") { return found }
            }
        }
        return nil
    }
}
