/** A Fastify option that takes one item or several (a route's hooks, say), as an array. */
export function asArray<T> (value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value]
}
