// Capability behaviours (security area). Each entry is one file's default export.
export const capBehaviors = [] as const
