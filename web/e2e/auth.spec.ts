import { capture, expect, PASSWORD, test, uniqueName } from './fixtures';

test.describe('sign-in and sign-up', () => {
  test('the sign-in form: labelled fields, wrong credentials shown inline, accessible in every layout', async ({ page }) => {
    await page.goto('/');
    await expect(page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible();
    await expect(page.getByLabel('Username', { exact: true })).toBeFocused();
    await capture(page, 'sign-in', { phone: true });

    await page.getByLabel('Username', { exact: true }).fill(uniqueName('nobody'));
    await page.getByLabel('Password', { exact: true }).fill('not the password');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await expect(page.getByRole('alert').filter({ hasText: 'Wrong username or password.' })).toBeVisible();
    await capture(page, 'sign-in-error', { dark: false });
  });

  test('the sign-up form: rules checked before asking, a taken username shown on its field', async ({ page }) => {
    await page.goto('/');
    await page.getByRole('button', { name: 'Create an account' }).click();
    await expect(page.getByRole('heading', { name: 'Create an account' })).toBeVisible();
    await capture(page, 'sign-up', { phone: true });

    // A weak password never reaches the server.
    await page.getByLabel('Username', { exact: true }).fill(uniqueName('weak'));
    await page.getByLabel('Password', { exact: true }).fill('short');
    await page.getByRole('button', { name: 'Create account', exact: true }).click();
    await expect(page.getByText('Use at least 8 characters.')).toBeVisible();
    await expect(page.getByLabel('Password', { exact: true })).toHaveAttribute('aria-invalid', 'true');
    await capture(page, 'sign-up-weak-password', { dark: false });

    // A taken username: someone else registered it first.
    const taken = uniqueName('taken');
    const res = await page.request.post('/api/v1/auth/register', { data: { username: taken, password: PASSWORD } });
    expect(res.status()).toBe(201);
    await page.getByLabel('Username', { exact: true }).fill(taken);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account', exact: true }).click();
    await expect(page.getByText('That username is taken. Try another one.')).toBeVisible();
  });

  test('one tab at a time: a second tab offers to take over, and the first one then stops', async ({ context, page }) => {
    await page.goto('/');
    await expect(page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible();
    const second = await context.newPage();
    await second.goto('/');
    await expect(second.getByRole('heading', { name: 'LesCopains is open in another tab' })).toBeVisible();
    await capture(second, 'other-tab', { dark: false });
    await second.getByRole('button', { name: 'Use here' }).click();
    await expect(second.getByRole('heading', { name: 'Welcome back!' })).toBeVisible();
    await expect(page.getByRole('heading', { name: 'LesCopains is open in another tab' })).toBeVisible();
    await expect(page.getByText('You opened LesCopains in another tab or window, so this one stopped.')).toBeVisible();
  });

  test('the page follows the Content-Security-Policy: nothing inline, nothing from elsewhere', async ({ page }) => {
    const violations: string[] = [];
    page.on('console', (msg) => {
      if (/Content.Security.Policy|Refused to/i.test(msg.text())) violations.push(msg.text());
    });
    const response = await page.goto('/');
    expect(response?.headers()['content-security-policy']).toContain("default-src 'self'");
    await expect(page.getByRole('heading', { name: 'Welcome back!' })).toBeVisible();
    await page.getByRole('button', { name: 'Create an account' }).click();
    await expect(page.getByRole('heading', { name: 'Create an account' })).toBeVisible();
    expect(violations).toEqual([]);
  });
});
